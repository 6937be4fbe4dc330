"""int8 accuracy on the trained YOLOv8n fixture: our int8 TFLite against Ultralytics ``val`` of the ``.pt``.

Issue 14, item 4: on held-out labelled scenes, the converter's ``--validate`` report of the int8 conversion
loses at most 1 mAP@0.5 point and 2 mAP@0.5:0.95 points against Ultralytics' own ``val`` of the checkpoint
(build_ultralytics_pt.py runs it in the Ultralytics venv, on the same images and labels). The float source
through the agent must agree with Ultralytics val too, or the yardstick itself would be off.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_helpers import ok, report, run

from agent import load_detector
from tests.conformance import refs

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ULTRA = refs.REPO / "tests" / "conformance" / "ultralytics"
TRAINED = refs.REPO / "tests" / "conformance" / "assets" / "yolov8n_scenes.pt"
IMGSZ = 320
HELDOUT, CALIBRATION = 200, 300
MAX_MAP50_DROP, MAX_MAP_DROP = 1.0, 2.0  # points, the bounds
# COCO-style mAP (faster-coco-eval, the report's) and Ultralytics' own mAP interpolate differently
METRIC_AGREEMENT = 1.5  # points, source through the agent vs Ultralytics val of the same .pt


@pytest.fixture(scope="module")
def trained() -> Path:
    if not TRAINED.is_file():
        pytest.skip(f"the trained fixture {TRAINED.relative_to(refs.REPO)} is not there (train_yolov8n.py makes it)")
    python = refs.ref_python("ultralytics")
    inputs = (TRAINED, ULTRA / "scene_data.py", ULTRA / "build_formats.py", refs.REPO / "agent" / "sources" / "scenes.py")
    return refs.build_fixture(
        "ultralytics-pt-trained",
        python,
        HERE / "build_ultralytics_pt.py",
        "--model",
        str(TRAINED.relative_to(refs.REPO)),
        "--imgsz",
        str(IMGSZ),
        "--heldout",
        str(HELDOUT),
        "--calibration",
        str(CALIBRATION),
        inputs=inputs,
    )


@pytest.fixture(scope="module")
def int8_report(trained: Path, torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("trained-int8")
    ok(
        run(
            torch_python,
            str(trained / "model.pt"),
            "-o",
            str(out),
            "--quantize",
            "int8",
            "--io-type",
            "uint8",
            "--calibration",
            str(trained / "calibration"),
            "--validate",
            str(trained / "val"),
            "--score-threshold",
            "0.25",
            timeout=3000,
        )
    )
    return out, report(out)


def test_int8_within_bounds_of_ultralytics_val(trained: Path, int8_report: tuple[Path, dict]) -> None:
    _, data = int8_report
    val = json.loads((trained / "val.json").read_text())
    assert data["labelled"] and data["images"] == HELDOUT == val["images"], data
    ours = data["converted"]
    drop50 = 100 * (val["mAP50"] - ours["mAP50"])
    drop = 100 * (val["mAP50_95"] - ours["mAP50_95"])
    summary = f"Ultralytics val {val}; ours int8 {ours}; source through the agent {data['source']}"
    assert val["mAP50"] >= 0.5, f"the trained fixture is too weak to prove anything: {summary}"
    assert drop50 <= MAX_MAP50_DROP, f"int8 lost {drop50:.2f} mAP@0.5 points: {summary}"
    assert drop <= MAX_MAP_DROP, f"int8 lost {drop:.2f} mAP@0.5:0.95 points: {summary}"


def test_source_through_the_agent_agrees_with_ultralytics_val(trained: Path, int8_report: tuple[Path, dict]) -> None:
    """The yardstick: the .pt run through the agent's preprocessing, decoder and the report's mAP lands where
    Ultralytics val does (a letterbox, colour or NMS mistake would show here first)."""
    _, data = int8_report
    val = json.loads((trained / "val.json").read_text())
    assert abs(100 * (data["source"]["mAP50"] - val["mAP50"])) <= METRIC_AGREEMENT, (data["source"], val)
    assert abs(100 * (data["source"]["mAP50_95"] - val["mAP50_95"])) <= METRIC_AGREEMENT, (data["source"], val)


def test_int8_model_is_self_describing(trained: Path, int8_report: tuple[Path, dict]) -> None:
    out, _ = int8_report
    det = load_detector(out / "model.tflite")
    try:
        assert det.manifest.labels == ("circle", "square", "triangle", "cross"), "the checkpoint's names travel"
        assert (det.manifest.input.width, det.manifest.input.height) == (IMGSZ, IMGSZ), "imgsz from the checkpoint"
        assert det.manifest.input.dtype.value == "uint8"
        assert det.manifest.quantization["head_guard"]["head_kept_float"]
    finally:
        det.close()
    for name in ("report.html", "pr_curves.png", "confusion_matrix.png", "score_scatter.png", "latency.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, f"the report lacks {name}"
