"""quantize-onnx: ORT static QDQ on the demo ONNX and on a dynamic-axis Ultralytics-layout ONNX; the agent loads the results.

Oracles: the demo's labelled self-test set (mAP drop via --validate), and the float source model run by ONNX
Runtime on the same inputs (int8 outputs must track it).
"""

from __future__ import annotations

import json
from pathlib import Path

import dynamic_yolo
import numpy as np
import pytest
from convert_helpers import DEMO_ONNX, SELFTEST, ok, report, run

from agent import load_detector

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_quantize_onnx_demo(method, torch_python, conversions, calibration_dir):
    out = conversions.get(
        f"onnx-q-{method}",
        torch_python,
        [
            str(DEMO_ONNX),
            "--calibration",
            str(calibration_dir),
            "--method",
            method,
            "--validate",
            str(SELFTEST),
            "--max-map-drop",
            "3",
        ],
        tool="quantize",
    )
    data = report(out)
    assert data["map_drop_points"] <= 3.0, data
    det = load_detector(out / "model.onnx")
    q = det.manifest.quantization
    assert q["format"] == "QDQ" and q["calibration"] == method and q["float_nodes"]
    assert det.manifest.labels == ("circle", "square", "triangle", "cross")  # taken from the source's manifest


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_quantize_onnx_reports_latency(fmt, torch_python, calibration_dir, tmp_path):
    """Both models are timed on this machine; the notice is there exactly when int8 is the slower one."""
    out = tmp_path / fmt
    proc = ok(
        run(torch_python, str(DEMO_ONNX), "--calibration", str(calibration_dir), "--format", fmt, "-o", str(out), tool="quantize")
    )
    q = json.loads((out / "model.json").read_text())["quantization"]
    latency = q["latency"]
    assert q["format"] == {"qdq": "QDQ", "qoperator": "QOperator"}[fmt]
    assert latency["float32_p50_ms"] > 0 and latency["int8_p50_ms"] > 0
    slower = latency["int8_p50_ms"] > latency["float32_p50_ms"]
    assert (latency["int8_slower_notice"] is not None) == slower, latency
    assert ("SLOWER" in proc.stdout) == slower and "latency on this machine" in proc.stdout
    load_detector(out / "model.onnx").close()


def _static_input(path: Path) -> list[int]:
    import onnxruntime as ort

    return list(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape)


def test_dynamic_onnx_takes_size_labels_and_task_from_metadata(dynamic_onnx, torch_python, calibration_dir, tmp_path):
    """No --input-size, no --labels: imgsz [256, 320] (H, W) and names come from the ONNX metadata_props."""
    out = tmp_path / "q"
    args = [str(dynamic_onnx["meta"]), "--calibration", str(calibration_dir), "-o", str(out)]
    proc = ok(run(torch_python, *args, tool="quantize"))
    assert "latency on this machine" in proc.stdout
    det = load_detector(out / "model.onnx")
    m = det.manifest
    assert (m.input.width, m.input.height) == (dynamic_yolo.IMGSZ[1], dynamic_yolo.IMGSZ[0])
    assert m.labels == tuple(dynamic_yolo.NAMES.values()) and m.task.value == "detect"
    assert m.input.normalization.std == (255.0, 255.0, 255.0)
    assert "names" in m.provenance["source_metadata"]["labels"]
    assert _static_input(out / "model.onnx") == [1, 3, 256, 320]  # the int8 file is fixed at that size
    det.close()
    _assert_int8_tracks_float(dynamic_onnx["meta"], out / "model.onnx", (256, 320))


def _assert_int8_tracks_float(
    source: Path, quantized: Path, hw: tuple[int, int], box_scale: float = dynamic_yolo.BOX_PIXELS
) -> None:
    """Oracle: the float source in ONNX Runtime on the same inputs; int8 class scores stay close to it."""
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    x = rng.random((1, 3, *hw), dtype=np.float32)
    ref = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    got = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert got.shape == ref.shape
    scores_err = float(np.abs(got[0, 4:] - ref[0, 4:]).max())
    boxes_err = float(np.abs(got[0, :4] - ref[0, :4]).max() / box_scale)
    assert scores_err < 0.05 and boxes_err < 0.05, (scores_err, boxes_err)


def test_input_size_fixes_a_dynamic_model(dynamic_onnx, torch_python, calibration_dir, tmp_path):
    out = tmp_path / "q"
    ok(
        run(
            torch_python,
            str(dynamic_onnx["bare"]),
            "--calibration",
            str(calibration_dir),
            "--input-size",
            "192x160",
            "--labels",
            str(_labels(tmp_path, 3)),
            "--no-speed-check",
            "-o",
            str(out),
            tool="quantize",
        )
    )
    m = load_detector(out / "model.onnx").manifest
    assert (m.input.width, m.input.height) == (192, 160) and m.labels == ("a0", "a1", "a2")
    assert _static_input(out / "model.onnx") == [1, 3, 160, 192]
    assert "latency" not in m.quantization
    _assert_int8_tracks_float(dynamic_onnx["bare"], out / "model.onnx", (160, 192))


def test_dynamic_model_without_size_asks_for_input_size(dynamic_onnx, torch_python, calibration_dir, tmp_path):
    out = tmp_path / "q"
    proc = run(torch_python, str(dynamic_onnx["bare"]), "--calibration", str(calibration_dir), "-o", str(out), tool="quantize")
    assert proc.returncode == 2 and "--input-size" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_input_size_contradicting_a_static_model(torch_python, calibration_dir, tmp_path):
    out = tmp_path / "q"
    proc = run(
        torch_python,
        str(DEMO_ONNX),
        "--calibration",
        str(calibration_dir),
        "--input-size",
        "320",
        "-o",
        str(out),
        tool="quantize",
    )
    assert proc.returncode == 2 and "contradicts" in proc.stderr and "320x320" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_label_count_mismatch_leaves_the_previous_output_alone(torch_python, calibration_dir, tmp_path):
    """3 labels for the 4-class demo: exit 2 naming the count; an earlier good output in -o stays as it was."""
    out = tmp_path / "q"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous model")
    proc = run(
        torch_python,
        str(DEMO_ONNX),
        "--calibration",
        str(calibration_dir),
        "--labels",
        str(_labels(tmp_path, 3)),
        "-o",
        str(out),
        tool="quantize",
    )
    assert proc.returncode == 2 and "3 labels (--labels) do not match the class count" in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"] and (out / "model.onnx").read_bytes() == b"previous model"


def _labels(folder: Path, n: int) -> Path:
    path = folder / f"labels{n}.txt"
    path.write_text("".join(f"a{i}\n" for i in range(n)))
    return path


@pytest.fixture(scope="module")
def ultralytics_onnx() -> Path:
    """Ultralytics' own ONNX exports of a YOLOv8n (3 classes, imgsz 160x224), shared with the metadata conformance suite."""
    from tests.conformance.metadata.fixture import ultralytics_exports

    return ultralytics_exports()


@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_ultralytics_dynamic_export(activations, ultralytics_onnx, torch_python, calibration_dir, tmp_path):
    """A real `dynamic=True` export: size and labels from its metadata, int8 tracking the float model in ORT."""
    out = tmp_path / activations
    source = ultralytics_onnx / "yolov8n_dynamic.onnx"
    args = [str(source), "--calibration", str(calibration_dir), "--activations", activations, "-o", str(out)]
    ok(run(torch_python, *args, tool="quantize"))
    det = load_detector(out / "model.onnx")
    m = det.manifest
    assert (m.input.width, m.input.height) == (224, 160) and m.labels == ("person", "traffic light", "hot dog")
    assert m.quantization["activations"] == f"{activations} per-tensor" and m.quantization["latency"]["int8_p50_ms"] > 0
    det.close()
    assert _static_input(out / "model.onnx") == [1, 3, 160, 224]
    _assert_int8_tracks_float(source, out / "model.onnx", (160, 224), box_scale=224.0)


def test_ultralytics_static_export_refuses_another_size(ultralytics_onnx, torch_python, calibration_dir, tmp_path):
    out = tmp_path / "q"
    source = ultralytics_onnx / "yolov8n_static.onnx"
    proc = run(
        torch_python, str(source), "--calibration", str(calibration_dir), "--input-size", "320", "-o", str(out), tool="quantize"
    )
    assert proc.returncode == 2 and "contradicts" in proc.stderr and "224x160" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_ultralytics_classifier_export(ultralytics_onnx, torch_python, calibration_dir, tmp_path):
    """task=classify and the 1000 names travel from Ultralytics' metadata; the agent decodes top-k with them."""
    out = tmp_path / "cls"
    source = ultralytics_onnx / "yolov8n_cls.onnx"
    ok(run(torch_python, str(source), "--calibration", str(calibration_dir), "--no-speed-check", "-o", str(out), tool="quantize"))
    det = load_detector(out / "model.onnx")
    m = det.manifest
    assert m.task.value == "classify" and m.decoder.type == "classifier"
    assert len(m.labels) == 1000 and m.labels[7] == "kind 7" and (m.input.width, m.input.height) == (96, 96)
    det.close()
