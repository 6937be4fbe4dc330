"""The TensorFlow paths: ONNX through onnx2tf, and a small Keras model through the TF Lite converter."""

from __future__ import annotations

import json
from pathlib import Path

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
    out = conversions.get(
        "onnx2tf-fp32",
        tf_python,
        [str(DEMO_ONNX), "--labels", str(SELFTEST / "labels.json"), "--validate", str(SELFTEST), "--score-threshold", "0.45"],
    )
    data = report(out)
    assert data["outputs"][0]["max_abs"] < 1e-4 and data["map_drop_points"] <= 0.1, data
    assert sha256_file(DEMO_ONNX) == json.loads((DEMO_ONNX.parent / "model.json").read_text())["sha256"], (
        "onnx2tf modified the source model in place"
    )
    det = load_detector(out / "model.tflite")
    assert det.manifest.provenance["converter_path"] == "onnx2tf"
    assert det.manifest.input.layout.value == "NHWC"


def test_onnx_through_onnx2tf_int8(tf_python, conversions, calibration_dir):
    out = conversions.get(
        "onnx2tf-int8",
        tf_python,
        [
            str(DEMO_ONNX),
            "--labels",
            str(SELFTEST / "labels.json"),
            "--quantize",
            "int8",
            "--io-type",
            "uint8",
            "--calibration",
            str(calibration_dir),
            "--validate",
            str(SELFTEST),
            "--score-threshold",
            "0.45",
        ],
    )
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


def _ssd_fixture() -> Path:
    """The conformance SSD (a TF SavedModel whose post-process TF's converter fuses into TFLite_Detection_PostProcess)
    and the op's own answers; the same cached fixture tests/conformance/formats uses."""
    from tests.conformance import refs

    return refs.build_fixture(
        "ssd-postprocess",
        refs.ref_python("convert"),
        refs.REPO / "tests" / "conformance" / "formats" / "build_ssd_postprocess.py",
        inputs=(refs.REPO / "agent" / "sources" / "scenes.py",),
    )


def _ssd_detections(model: Path, fixture: Path, threshold: float) -> dict[str, list]:
    import cv2

    from agent.manifest import Thresholds

    det = load_detector(model, thresholds=Thresholds(score=threshold))
    try:
        assert det.manifest.decoder.type == "ssd_postprocess" and det.manifest.input.resize.value == "stretch"
        return {
            name: det.detect(cv2.imread(str(fixture / "images" / name)))
            for name in json.loads((fixture / "reference.json").read_text())["models"]["float"]["images"]
        }
    finally:
        det.close()


def test_ssd_savedmodel_keeps_the_postprocess_op(tf_python, tmp_path_factory):
    """SavedModel -> float TFLite ending in the op; the agent's boxes are the op's own (the fixture's TF-converter
    answers), box for box."""
    from tests.conformance import refs

    fixture = _ssd_fixture()
    labels = tmp_path_factory.mktemp("ssd-labels") / "labels.txt"
    labels.write_text("circle\nsquare\ntriangle\ncross\n")
    out = tmp_path_factory.getbasetemp() / "ssd-fp32"
    ok(
        run(
            tf_python,
            str(fixture / "saved_model"),
            "-o",
            str(out),
            "--labels",
            str(labels),
            "--mean",
            "127.5,127.5,127.5",
            "--std",
            "127.5,127.5,127.5",
        )
    )
    manifest = json.loads((out / "model.json").read_text())
    assert "not checked" in str(manifest["quantization"]["fp32_parity_max_abs"])
    assert b"TFLite_Detection_PostProcess" in (out / "model.tflite").read_bytes()
    reference = json.loads((fixture / "reference.json").read_text())
    threshold = reference["threshold"]
    found = _ssd_detections(out / "model.tflite", fixture, threshold)
    matched = sum(
        refs.assert_detections_match(found[name], expected["detections"], threshold, name)
        for name, expected in reference["models"]["float"]["images"].items()
    )
    assert matched >= 20, f"only {matched} boxes compared"


def _recall(found: dict[str, list[dict]], reference: dict[str, dict]) -> tuple[int, int]:
    """(hits, total): the float op's boxes that ``found`` also has (same class, IoU >= 0.5)."""
    from tests.conformance import refs

    total = hits = 0
    for name, expected in reference.items():
        for ref in expected["detections"]:
            total += 1
            hits += any(d["class_id"] == ref["class_id"] and refs.iou(d["box"], ref["box"]) >= 0.5 for d in found[name])
    return hits, total


@pytest.mark.xfail(
    strict=True,
    reason="measured: ai-edge-quantizer's static int8 of this SSD keeps 52 of the float op's 67 "
    "boxes, TF's own full-integer conversion 64 (uint8 and float32 I/O alike; the head and the op stay float "
    "in ours); not yet explained: an open accuracy gap on the SSD route",
)
def test_ssd_savedmodel_int8(tf_python, tmp_path_factory, calibration_dir):
    """int8 (uint8 input), the op kept float: it keeps the float op's boxes about as well as TF's own full-integer
    conversion of the same SavedModel does (the fixture's uint8.tflite, 32 calibration scenes; ours gets 48)."""
    fixture = _ssd_fixture()
    labels = tmp_path_factory.mktemp("ssd-labels8") / "labels.txt"
    labels.write_text("circle\nsquare\ntriangle\ncross\n")
    out = tmp_path_factory.getbasetemp() / "ssd-int8"
    ok(
        run(
            tf_python,
            str(fixture / "saved_model"),
            "-o",
            str(out),
            "--labels",
            str(labels),
            "--quantize",
            "int8",
            "--io-type",
            "uint8",
            "--calibration",
            str(calibration_dir),
            "--mean",
            "127.5,127.5,127.5",
            "--std",
            "127.5,127.5,127.5",
        )
    )
    assert b"TFLite_Detection_PostProcess" in (out / "model.tflite").read_bytes()
    reference = json.loads((fixture / "reference.json").read_text())
    found = {
        name: [{"class_id": d.class_id, "box": [d.box.x1, d.box.y1, d.box.x2, d.box.y2]} for d in dets]
        for name, dets in _ssd_detections(out / "model.tflite", fixture, reference["threshold"]).items()
    }
    tf_int8 = {name: image["detections"] for name, image in reference["models"]["uint8"]["images"].items()}
    ours, total = _recall(found, reference["models"]["float"]["images"])
    theirs, _ = _recall(tf_int8, reference["models"]["float"]["images"])
    assert total >= 20, f"only {total} float boxes to compare"
    assert ours >= theirs - 0.05 * total, f"our int8 keeps {ours} of {total} float boxes, TF's own int8 {theirs}"


def test_ssd_quantize_head_keeps_the_postprocess_outputs_float(tf_python, tmp_path, calibration_dir):
    """--quantize-head cannot quantize the op's outputs (float by its contract): the agent still decodes the model."""
    fixture = _ssd_fixture()
    labels = tmp_path / "labels.txt"
    labels.write_text("circle\nsquare\ntriangle\ncross\n")
    proc = ok(
        run(
            tf_python,
            str(fixture / "saved_model"),
            "-o",
            str(tmp_path / "out"),
            "--labels",
            str(labels),
            "--quantize",
            "int8",
            "--quantize-head",
            "--calibration",
            str(calibration_dir),
            "--mean",
            "127.5,127.5,127.5",
            "--std",
            "127.5,127.5,127.5",
        )
    )
    assert "--quantize-head ignored" in proc.stdout + proc.stderr
    reference = json.loads((fixture / "reference.json").read_text())
    found = _ssd_detections(tmp_path / "out" / "model.tflite", fixture, reference["threshold"])
    assert sum(len(v) for v in found.values()) > 0
