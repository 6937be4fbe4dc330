"""Ultralytics-exported detectors (random weights, built from their yaml) load bare and answer as Ultralytics predict.

Oracle: Ultralytics ``predict`` on the very file the agent loads, on the same images (scenes from
agent/sources/scenes.py at 640x480 in JPEG and PNG, and odd aspect ratios, so letterbox geometry is compared
too), with tests/conformance/refs.py's bounds. The agent gets the file alone: no manifest, no config, only the
thresholds the reference was asked for.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from agent.detector import load_detector
from tests.conformance.ultralytics.fixtures import (
    END2END_FAMILIES,
    FAMILIES,
    VariantMissing,
    agent_matches_reference,
    format_fixture,
    variant_file,
)

pytestmark = pytest.mark.slow


def _file(family: str, variant: str) -> tuple[Path, Path, dict[str, Any]]:
    fixture = format_fixture(family)
    try:
        path, reference = variant_file(fixture, variant)
    except VariantMissing as exc:
        pytest.fail(str(exc))
    boxes = sum(len(v["detections"]) for v in reference["images"].values())
    assert boxes >= 10, f"{family} {variant}: the reference has only {boxes} boxes, too few to prove anything"
    return fixture, path, reference


@pytest.mark.parametrize("variant", ["onnx", "onnx-dynamic"])
@pytest.mark.parametrize("family", FAMILIES + END2END_FAMILIES)
def test_onnx_export_matches_predict(family: str, variant: str) -> None:
    fixture, path, reference = _file(family, variant)
    assert agent_matches_reference(path, fixture, reference, f"{family} {variant}") >= 10


@pytest.mark.parametrize("family", FAMILIES + END2END_FAMILIES)
def test_tflite_export_matches_predict(family: str) -> None:
    """Ultralytics' LiteRT export (litert-torch; NCHW input, boxes normalized to 0..1 in the graph)."""
    fixture, path, reference = _file(family, "tflite")
    assert agent_matches_reference(path, fixture, reference, f"{family} tflite") >= 10


@pytest.mark.parametrize("variant", ["onnx", "onnx-dynamic"])
def test_labels_and_input_size_come_from_metadata(variant: str) -> None:
    """Ultralytics writes ``names`` and ``imgsz`` into the ONNX metadata: a bare load uses them."""
    fixture = format_fixture("yolov8n")
    path, _ = variant_file(fixture, variant)
    facts = json.loads((fixture / "build.json").read_text())["variants"][variant]["metadata"]
    names = ast.literal_eval(facts["names"])  # the dict literal Ultralytics wrote: the oracle for the agent's reader
    detector = load_detector(path)
    try:
        assert detector.labels == tuple(names[i] for i in range(len(names)))
        height, width = json.loads(facts["imgsz"])
        assert (detector.manifest.input.width, detector.manifest.input.height) == (width, height)
    finally:
        detector.close()
