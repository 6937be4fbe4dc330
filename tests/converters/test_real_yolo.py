"""Real Ultralytics models through convert-to-tflite: ``.pt`` checkpoints and Ultralytics-exported ONNX (static and
dynamic axes) for YOLOv8n, YOLO11n and YOLOv5nu, each loaded by the agent afterwards.

Oracle: Ultralytics ``predict`` on the very file that was converted (the .pt, or the exported .onnx), box for box
with tests/conformance/refs.py's bounds (IoU >= 0.99, same class, score within 0.01). The conversion runs in the
converter venv (a subprocess, as a user runs it); the check runs here, in the device install.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_helpers import ok, run

from tests.conformance import refs
from tests.conformance.ultralytics.fixtures import (
    FAMILIES,
    FORMAT_IMGSZ,
    VariantMissing,
    agent_matches_reference,
    format_fixture,
    variant_file,
)

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ULTRA = refs.REPO / "tests" / "conformance" / "ultralytics"
SHARED = (ULTRA / "scene_data.py", ULTRA / "build_formats.py", refs.REPO / "agent" / "sources" / "scenes.py")
IMGSZ = FORMAT_IMGSZ


def pt_fixture(family: str, *extra: str) -> Path:
    """A structured-random checkpoint of ``family`` and Ultralytics predict on it (build_ultralytics_pt.py)."""
    python = refs.ref_python("ultralytics")
    return refs.build_fixture(
        f"ultralytics-pt-{family}",
        python,
        HERE / "build_ultralytics_pt.py",
        "--model",
        f"{family}.yaml",
        "--imgsz",
        str(IMGSZ),
        *extra,
        inputs=SHARED,
    )


def convert(python: str, model: Path, out: Path, *extra: str) -> Path:
    """convert-to-tflite (the installed console script of the converter venv), once per output folder."""
    if not (out / "model.tflite").is_file():
        ok(run(python, str(model), "-o", str(out), *extra, timeout=1200))
    return out / "model.tflite"


@pytest.mark.parametrize("family", FAMILIES)
def test_pt_checkpoint(family: str, torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The .pt is read without the ultralytics package; the float .tflite gives Ultralytics predict's boxes."""
    fixture = pt_fixture(family)
    out = tmp_path_factory.getbasetemp() / f"pt-{family}"
    tflite = convert(torch_python, fixture / "model.pt", out, "--input-size", str(IMGSZ))
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["provenance"]["source_kind"] == "ultralytics-pt"
    assert manifest["decoder"]["type"] == "yolov8" and len(manifest["labels"]) == 80
    assert manifest["labels"][:2] == ["0", "1"], "the checkpoint's names (a yaml-built model's) travel into the manifest"
    reference = json.loads((fixture / "reference.json").read_text())
    assert sum(len(v["detections"]) for v in reference["images"].values()) >= 10, "reference too sparse to prove much"
    assert agent_matches_reference(tflite, fixture, reference, f"{family}.pt -> tflite") >= 10


@pytest.mark.parametrize("variant", ["onnx", "onnx-dynamic"])
@pytest.mark.parametrize("family", FAMILIES)
def test_ultralytics_onnx(family: str, variant: str, tf_python: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Static and dynamic-axis exports convert through onnx2tf (the head keeps its layout) and match predict."""
    fixture = format_fixture(family)
    try:
        source, reference = variant_file(fixture, variant)
    except VariantMissing as exc:
        pytest.fail(str(exc))
    out = tmp_path_factory.getbasetemp() / f"{variant}-{family}"
    tflite = convert(tf_python, source, out)  # a dynamic file's size comes from its imgsz metadata
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["provenance"]["converter_path"] == "onnx2tf"
    assert manifest["input"]["width"] == IMGSZ and manifest["input"]["layout"] == "NHWC"
    assert agent_matches_reference(tflite, fixture, reference, f"{family} {variant} -> tflite") >= 10


def test_ultralytics_torchscript(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Ultralytics' TorchScript export goes through torch's TorchScript -> ExportedProgram converter and litert-torch;
    labels and input size come from the config.txt it carries."""
    fixture = pt_fixture("yolov8n", "--torchscript")
    out = tmp_path_factory.getbasetemp() / "torchscript-yolov8n"
    tflite = convert(torch_python, fixture / "model.torchscript", out)
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["provenance"]["source_kind"] == "torchscript"
    assert manifest["input"]["width"] == IMGSZ and len(manifest["labels"]) == 80
    reference = json.loads((fixture / "reference_torchscript.json").read_text())
    assert agent_matches_reference(tflite, fixture, reference, "yolov8n.torchscript -> tflite") >= 10


FAKE_CLASSIFY_CHECKPOINT = """
import sys, types, torch
# a checkpoint shaped like Ultralytics' (classes pickled by module path), made without the ultralytics package
for name in ("ultralytics", "ultralytics.nn", "ultralytics.nn.tasks", "ultralytics.nn.modules", "ultralytics.nn.modules.head"):
    sys.modules[name] = types.ModuleType(name)
Classify = type("Classify", (torch.nn.Module,), {"__module__": "ultralytics.nn.modules.head"})
ClassificationModel = type("ClassificationModel", (torch.nn.Module,), {"__module__": "ultralytics.nn.tasks"})
sys.modules["ultralytics.nn.modules.head"].Classify = Classify
sys.modules["ultralytics.nn.tasks"].ClassificationModel = ClassificationModel
model = ClassificationModel()
model.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Classify())
model.task = "classify"
torch.save({"model": model, "train_args": {"imgsz": 224}}, sys.argv[1])
"""


def test_unsupported_ultralytics_head_names_block_and_route(torch_python: str, tmp_path: Path) -> None:
    """A classify checkpoint is recognised as Ultralytics', refused with exit 2, naming its head and the ONNX route."""
    model = tmp_path / "cls.pt"
    ok(run(torch_python, FAKE_CLASSIFY_CHECKPOINT, str(model), tool="code"))
    proc = run(torch_python, str(model), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "ultralytics.Classify" in proc.stderr and "format=onnx" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out" / "model.tflite").exists()
