"""convert-to-tflite keeps what the source model says about itself: labels, input size, normalization.

Source: tests/converters/dynamic_yolo.py's dynamic-axis detector with Ultralytics' metadata_props (names,
imgsz as [H, W]). Oracle for the numbers: the float source in ONNX Runtime on the same input.
"""

from __future__ import annotations

from pathlib import Path

import dynamic_yolo
import numpy as np
import pytest
from convert_helpers import ok, run

from agent import load_detector

pytestmark = pytest.mark.slow


def test_onnx_metadata_travels_into_the_tflite_manifest(dynamic_onnx, tf_python, tmp_path):
    out = tmp_path / "t"
    ok(run(tf_python, str(dynamic_onnx["meta"]), "-o", str(out)))
    det = load_detector(out / "model.tflite")
    m = det.manifest
    height, width = dynamic_yolo.IMGSZ
    assert (m.input.width, m.input.height) == (width, height)
    assert m.labels == tuple(dynamic_yolo.NAMES.values()) and m.decoder.type == "yolov8"
    assert m.input.normalization.mean == (0.0, 0.0, 0.0) and m.input.normalization.std == (255.0, 255.0, 255.0)
    det.close()
    _assert_tflite_matches_source(dynamic_onnx["meta"], out / "model.tflite", (height, width))


def _assert_tflite_matches_source(source: Path, tflite: Path, hw: tuple[int, int]) -> None:
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(5).random((1, 3, *hw), dtype=np.float32)
    ref = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    interp = Interpreter(model_path=str(tflite), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    got = got if got.shape == ref.shape else got.transpose(0, 2, 1)
    assert got.shape == ref.shape and float(np.abs(got - ref).max()) < 1e-3


def test_label_count_mismatch_is_exit_2_without_output(dynamic_onnx, tf_python, tmp_path):
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    out = tmp_path / "t"
    proc = run(tf_python, str(dynamic_onnx["meta"]), "--labels", str(labels), "-o", str(out))
    assert proc.returncode == 2 and "2 labels (--labels) do not match the class count" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_dynamic_onnx_without_metadata_asks_for_input_size(dynamic_onnx, tf_python, tmp_path):
    out = tmp_path / "t"
    proc = run(tf_python, str(dynamic_onnx["bare"]), "-o", str(out))
    assert proc.returncode == 2 and "--input-size" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()
