"""Real Ultralytics models through convert-to-tflite: ``.pt`` checkpoints and Ultralytics-exported ONNX (static and
dynamic axes) for YOLOv8n, YOLO11n and YOLOv5nu, each loaded by the agent afterwards.

Oracle: Ultralytics ``predict`` on the very file that was converted (the .pt, or the exported .onnx), box for box
with tests/conformance/refs.py's bounds (IoU >= 0.99, same class, score within 0.01). The conversion runs in the
converter venv (a subprocess, as a user runs it); the check runs here, in the device install.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from convert_helpers import ok, run

from agent import load_detector
from agent.manifest import Thresholds
from tests.conformance import refs

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ULTRA = refs.REPO / "tests" / "conformance" / "ultralytics"
SHARED = (ULTRA / "scene_data.py", ULTRA / "build_formats.py", refs.REPO / "agent" / "sources" / "scenes.py")
IMGSZ = 320
FAMILIES = ("yolov8n", "yolo11n", "yolov5nu")


def pt_fixture(family: str) -> Path:
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
        inputs=SHARED,
    )


def onnx_fixture(family: str) -> Path:
    """Ultralytics' own ONNX exports (static and dynamic axes) and predict on them (the conformance builder)."""
    python = refs.ref_python("ultralytics")
    return refs.build_fixture(
        f"ultralytics-{family}",
        python,
        ULTRA / "build_formats.py",
        "--model",
        f"{family}.yaml",
        "--imgsz",
        str(IMGSZ),
        inputs=SHARED[:1] + SHARED[2:],
    )


def convert(python: str, model: Path, out: Path, *extra: str) -> Path:
    """convert-to-tflite (the installed console script of the converter venv), once per output folder."""
    if not (out / "model.tflite").is_file():
        ok(run(python, str(model), "-o", str(out), *extra, timeout=1200))
    return out / "model.tflite"


def assert_matches_reference(tflite: Path, folder: Path, reference: dict, where: str) -> int:
    threshold = reference["threshold"]
    detector = load_detector(
        tflite, thresholds=Thresholds(score=threshold, iou=reference["iou"], max_detections=reference["max_det"])
    )
    problems, matched = [], 0
    try:
        for name, expected in reference["images"].items():
            frame = cv2.imread(str(folder / name))
            found = detector.detect(frame)
            try:
                matched += refs.assert_detections_match(found, expected["detections"], threshold, f"{where} {name}")
            except AssertionError as exc:
                problems.append(str(exc))
    finally:
        detector.close()
    assert not problems, f"{len(problems)} images differ ({matched} boxes matched):\n" + "\n".join(problems)
    return matched


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
    assert assert_matches_reference(tflite, fixture, reference, f"{family}.pt") >= 10


@pytest.mark.parametrize("variant", ["onnx", "onnx-dynamic"])
@pytest.mark.parametrize("family", FAMILIES)
def test_ultralytics_onnx(family: str, variant: str, tf_python: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Static and dynamic-axis exports convert through onnx2tf (the head keeps its layout) and match predict."""
    fixture = onnx_fixture(family)
    build = json.loads((fixture / "build.json").read_text())
    entry = build["variants"][variant]
    assert "error" not in entry, f"the Ultralytics {variant} export failed: {entry.get('error')}"
    source = fixture / entry["file"]
    out = tmp_path_factory.getbasetemp() / f"{variant}-{family}"
    extra = ("--input-size", str(IMGSZ)) if variant == "onnx-dynamic" else ()
    tflite = convert(tf_python, source, out, *extra)
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["provenance"]["converter_path"] == "onnx2tf"
    assert manifest["input"]["width"] == IMGSZ and manifest["input"]["layout"] == "NHWC"
    reference = json.loads((source.parent / "reference.json").read_text())
    assert assert_matches_reference(tflite, fixture, reference, f"{family} {variant}") >= 10
