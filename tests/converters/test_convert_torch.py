"""The demo detector (a PyTorch module factory and TorchScript) through every quantization mode."""

from __future__ import annotations

import shutil

import cv2
import pytest
from convert_helpers import FACTORY, REPO, SELFTEST, demo_args, ok, report, run

from agent import load_detector
from agent.manifest import read_embedded_manifest

pytestmark = pytest.mark.slow

# tolerances on the 16 held-out self-test frames (mAP@0.5:0.95, points)
MAX_DROP = {"fp32": 0.1, "fp16": 0.5, "dynamic": 3.0, "int8": 3.0}


@pytest.mark.parametrize("mode", ["fp32", "fp16", "dynamic", "int8"])
def test_torch_module_every_mode(mode, torch_python, conversions, calibration_dir):
    extra = ["--io-type", "uint8"] if mode == "int8" else []
    out = conversions.get(f"torch-{mode}", torch_python, demo_args(mode, calibration_dir, *extra))
    data = report(out)
    assert data["labelled"] and data["images"] == 16
    assert data["map_drop_points"] <= MAX_DROP[mode], data
    assert data["converted"]["mAP50"] >= 0.9, data
    assert data["agreement"] >= (0.99 if mode in ("fp32", "fp16") else 0.9), data
    if mode == "fp32":
        assert data["outputs"][0]["max_abs"] < 1e-4

    # the agent loads the output (sidecar), and the same file alone (embedded manifest)
    det = load_detector(out / "model.tflite")
    assert det.manifest.input.layout.value == "NHWC"
    assert det.manifest.input.dtype.value == ("uint8" if mode == "int8" else "float32")
    assert det.manifest.quantization["mode"] == mode
    frame = cv2.imread(str(SELFTEST / "scene_00.jpg"))
    found = det.detect(frame)
    assert found, "no detections on a self-test frame"
    bare = out.parent / f"bare-{mode}"
    bare.mkdir(exist_ok=True)
    shutil.copy(out / "model.tflite", bare / "model.tflite")
    embedded = read_embedded_manifest(bare / "model.tflite")
    assert embedded is not None and embedded.labels == det.manifest.labels
    alone = load_detector(bare / "model.tflite")
    assert [d.label for d in alone.detect(frame)] == [d.label for d in found]


@pytest.mark.parametrize("io_type", ["int8", "float32"])
def test_int8_io_types(io_type, torch_python, conversions, calibration_dir):
    """--io-type int8 (signed input, the tensor's own scale/zero point) and float32 (quantize/dequantize
    inside the graph) give the same detections as the uint8 default: the agent's preprocessor writes
    each input type from the manifest and the tensor's quantization."""
    import numpy as np

    out = conversions.get(f"torch-int8-{io_type}", torch_python, demo_args("int8", calibration_dir, "--io-type", io_type))
    data = report(out)
    assert data["map_drop_points"] <= MAX_DROP["int8"] and data["converted"]["mAP50"] >= 0.9, data
    det = load_detector(out / "model.tflite")
    assert det.manifest.input.dtype.value == io_type
    assert det.manifest.quantization["input_type"] == io_type
    tensor = det.backend.input
    assert tensor.dtype == np.dtype(io_type)
    if io_type == "int8":  # pixels/255 in 0..1 quantized onto -128..127
        assert tensor.scale == pytest.approx(1 / 255, rel=0.01) and tensor.zero_point == -128
    uint8 = load_detector(
        conversions.get("torch-int8", torch_python, demo_args("int8", calibration_dir, "--io-type", "uint8")) / "model.tflite"
    )
    for name in ("scene_00.jpg", "scene_05.jpg", "scene_11.jpg"):
        frame = cv2.imread(str(SELFTEST / name))
        got, ref = det.detect(frame), uint8.detect(frame)
        assert sorted(d.label for d in got) == sorted(d.label for d in ref), name


def test_int8_head_guard_recorded(torch_python, conversions, calibration_dir):
    out = conversions.get("torch-int8", torch_python, demo_args("int8", calibration_dir, "--io-type", "uint8"))
    det = load_detector(out / "model.tflite")
    guard = det.manifest.quantization["head_guard"]
    assert guard["checked"] and guard["head_kept_float"]
    assert det.manifest.provenance["source_kind"] == "torch-factory"
    assert det.manifest.provenance["tools"]["litert-torch"]


def test_torchscript(torch_python, tmp_path, conversions, calibration_dir):
    scripted = tmp_path / "demo.pt"
    code = (
        "import sys, torch; sys.path.insert(0, '.'); from tests.converters.demo_factory import build; "
        f"m = build(); torch.jit.save(torch.jit.trace(m, torch.rand(1, 3, 192, 192)), {str(scripted)!r})"
    )
    ok(run(torch_python, code, tool="code"))
    out = tmp_path / "ts"
    args = demo_args("fp32", calibration_dir, "--input-size", "192")
    args[0] = str(scripted)
    ok(run(torch_python, *args, "-o", str(out)))
    data = report(out)
    assert data["outputs"][0]["max_abs"] < 1e-4 and data["map_drop_points"] <= 0.1
    assert load_detector(out / "model.tflite").manifest.provenance["source_kind"] == "torchscript"


def test_exported_program(torch_python, tmp_path, calibration_dir):
    """An ExportedProgram (.pt2, torch.export.save): no module attributes survive, so --input-size is given."""
    saved = tmp_path / "demo.pt2"
    code = (
        "import sys, torch; sys.path.insert(0, '.'); from tests.converters.demo_factory import build; "
        f"torch.export.save(torch.export.export(build(), (torch.rand(1, 3, 192, 192),)), {str(saved)!r})"
    )
    ok(run(torch_python, code, tool="code"))
    out = tmp_path / "ep"
    args = demo_args("fp32", calibration_dir, "--input-size", "192")
    args[0] = str(saved)
    ok(run(torch_python, *args, "-o", str(out)))
    data = report(out)
    assert data["outputs"][0]["max_abs"] < 1e-4 and data["map_drop_points"] <= 0.1
    assert data["converted"]["mAP50"] >= 0.9, data
    assert load_detector(out / "model.tflite").manifest.provenance["source_kind"] == "exported-program"


def test_pickled_module(torch_python, tmp_path, calibration_dir):
    """A whole pickled module (torch.save(model)); its class must be importable, here from scripts/."""
    saved = tmp_path / "demo_pickled.pt"
    code = (
        "import sys, torch; sys.path.insert(0, '.'); from tests.converters.demo_factory import build; "
        f"torch.save(build(), {str(saved)!r})"
    )
    ok(run(torch_python, code, tool="code"))
    out = tmp_path / "pickled"
    args = demo_args("int8", calibration_dir, "--io-type", "uint8")
    args[0] = str(saved)
    ok(run(torch_python, *args, "-o", str(out), pythonpath=(REPO / "scripts",)))
    data = report(out)
    assert data["map_drop_points"] <= MAX_DROP["int8"] and data["converted"]["mAP50"] >= 0.9, data
    det = load_detector(out / "model.tflite")
    assert det.manifest.provenance["source_kind"] == "torch-pickle"
    assert det.manifest.input.dtype.value == "uint8"


def test_report_files(torch_python, conversions, calibration_dir):
    out = conversions.get("torch-fp32", torch_python, demo_args("fp32", calibration_dir))
    for name in (
        "report.md",
        "report.json",
        "report.html",
        "latency.png",
        "pr_curves.png",
        "confusion_matrix.png",
        "score_scatter.png",
    ):
        assert (out / name).is_file(), name
    assert "mAP@0.5:0.95" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert all(f'src="{png}"' in page for png in ("latency.png", "pr_curves.png", "confusion_matrix.png")), page[-800:]


def test_max_map_drop_gate_fails(torch_python, tmp_path, calibration_dir):
    """A gate tighter than the measured drop exits 3 (the files are still written)."""
    out = tmp_path / "gate"
    proc = run(torch_python, *demo_args("int8", calibration_dir, "--io-type", "uint8", "--max-map-drop", "-100"), "-o", str(out))
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "dropped" in proc.stderr and (out / "model.tflite").is_file()


def test_factory_missing_toolchain_names_extra(tmp_path):
    """Without torch in the interpreter, the error names the extra to install."""
    import sys

    pytest.importorskip("ai_edge_litert")
    try:
        import torch  # noqa: F401

        pytest.skip("this interpreter has torch; the check needs one without it")
    except ImportError:
        pass
    proc = run(sys.executable, FACTORY, "--input-size", "192", "-o", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert "edge-agent[convert-torch]" in proc.stderr
