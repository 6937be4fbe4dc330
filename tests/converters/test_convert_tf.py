"""The TensorFlow paths: ONNX through onnx2tf, and a small Keras model through the TF Lite converter."""

from __future__ import annotations

import json

import pytest
from convert_helpers import DEMO_ONNX, SELFTEST, ok, report, run

from agent import load_detector
from agent.manifest import sha256_file

pytestmark = pytest.mark.slow

KERAS_MODEL = """
import sys, tensorflow as tf
inp = tf.keras.Input((96, 96, 3))
x = tf.keras.layers.Conv2D(8, 3, 2, padding="same", activation="relu")(inp)
x = tf.keras.layers.Conv2D(16, 3, 2, padding="same", activation="relu")(x)
x = tf.keras.layers.Conv2D(16, 3, 2, padding="same", activation="relu")(x)
boxes = tf.keras.layers.Conv2D(4, 1, activation="sigmoid")(x)
scores = tf.keras.layers.Conv2D(4, 1, activation="sigmoid")(x)
y = tf.keras.layers.Concatenate()([boxes, scores])
y = tf.keras.layers.Reshape((-1, 8))(y)
y = tf.keras.layers.Permute((2, 1))(y)
tf.keras.Model(inp, y).save(sys.argv[1])
"""


def test_onnx_through_onnx2tf(tf_python, conversions, calibration_dir):
    out = conversions.get("onnx2tf-fp32", tf_python, [str(DEMO_ONNX), "--labels", str(SELFTEST / "labels.json"),
                                                     "--validate", str(SELFTEST), "--score-threshold", "0.45"])
    data = report(out)
    assert data["outputs"][0]["max_abs"] < 1e-4 and data["map_drop_points"] <= 0.1, data
    assert sha256_file(DEMO_ONNX) == json.loads((DEMO_ONNX.parent / "model.json").read_text())["sha256"], \
        "onnx2tf modified the source model in place"
    det = load_detector(out / "model.tflite")
    assert det.manifest.provenance["converter_path"] == "onnx2tf"
    assert det.manifest.input.layout.value == "NHWC"


def test_onnx_through_onnx2tf_int8(tf_python, conversions, calibration_dir):
    out = conversions.get("onnx2tf-int8", tf_python, [
        str(DEMO_ONNX), "--labels", str(SELFTEST / "labels.json"), "--quantize", "int8", "--io-type", "uint8",
        "--calibration", str(calibration_dir), "--validate", str(SELFTEST), "--score-threshold", "0.45"])
    assert report(out)["map_drop_points"] <= 3.0, report(out)
    assert load_detector(out / "model.tflite").manifest.input.dtype.value == "uint8"


@pytest.mark.parametrize("mode", ["fp32", "fp16", "dynamic", "int8"])
def test_keras_model(mode, tf_python, tmp_path_factory, conversions, calibration_dir):
    model = tmp_path_factory.getbasetemp() / "small.keras"
    if not model.exists():
        ok(run(tf_python, KERAS_MODEL, str(model), tool="code"))
    args = [str(model), "--quantize", mode, "--validate", str(calibration_dir), "--score-threshold", "0.3"]
    if mode == "int8":
        args += ["--calibration", str(calibration_dir)]
    out = conversions.get(f"keras-{mode}", tf_python, args)
    data = report(out)  # no labels in the folder: self-consistency
    assert not data["labelled"]
    assert data["outputs"][0]["cosine"] > (0.9999 if mode in ("fp32", "fp16") else 0.99), data
    det = load_detector(out / "model.tflite")
    assert det.manifest.provenance["source_kind"] == "keras"
    assert det.manifest.decoder.type == "yolov8" and det.manifest.decoder.boxes_normalized
