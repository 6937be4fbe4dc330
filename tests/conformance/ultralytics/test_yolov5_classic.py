"""The classic anchor-based YOLOv5 layout ([1, N, 5+C] with objectness) loads bare and answers as the ``yolov5``
package does.

Oracle: the ``yolov5`` package's own letterbox, ONNX backend and ``non_max_suppression`` (what its ``detect.py``
runs) on the very file it exported, random weights given structure (build_yolov5.py), compared with
tests/conformance/refs.py's bounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.detector import load_detector
from agent.errors import ManifestError
from tests.conformance.ultralytics.fixtures import VariantMissing, agent_matches_reference, variant_file, yolov5_fixture

pytestmark = pytest.mark.slow


def _file(variant: str) -> tuple[Path, Path, dict[str, Any]]:
    fixture = yolov5_fixture()
    try:
        path, reference = variant_file(fixture, variant)
    except VariantMissing as exc:
        pytest.fail(str(exc))
    boxes = sum(len(v["detections"]) for v in reference["images"].values())
    assert boxes >= 10, f"yolov5 {variant}: the reference has only {boxes} boxes, too few to prove anything"
    return fixture, path, reference


def test_yolov5_static_export_matches_its_detect() -> None:
    fixture, path, reference = _file("onnx")
    assert agent_matches_reference(path, fixture, reference, "yolov5n onnx") >= 10


def test_yolov5_dynamic_export_matches_its_detect_at_the_configured_size() -> None:
    """yolov5's export writes ``stride`` and ``names`` but no size: ``model.input_size`` is what a user supplies."""
    fixture, path, reference = _file("onnx-dynamic")
    size = (reference["imgsz"], reference["imgsz"])
    assert agent_matches_reference(path, fixture, reference, "yolov5n onnx-dynamic", input_size=size) >= 10


def test_yolov5_dynamic_export_without_a_size_names_the_setting() -> None:
    _, path, _ = _file("onnx-dynamic")
    with pytest.raises(ManifestError, match=r"model\.input_size"):
        load_detector(path)
