"""The classic anchor-based YOLOv5 layout ([1, N, 5+C] with objectness) loads bare and answers as the ``yolov5``
package does.

Oracle: the ``yolov5`` package's own letterbox, ONNX backend and ``non_max_suppression`` (what its ``detect.py``
runs) on the very file it exported, random weights given structure (build_yolov5.py), compared with
tests/conformance/refs.py's bounds.
"""

from __future__ import annotations

import pytest

from tests.conformance.ultralytics.fixtures import VariantMissing, agent_matches_reference, variant_file, yolov5_fixture

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", ["onnx", "onnx-dynamic"])
def test_yolov5_export_matches_its_detect(variant: str) -> None:
    fixture = yolov5_fixture()
    try:
        path, reference = variant_file(fixture, variant)
    except VariantMissing as exc:
        pytest.fail(str(exc))
    boxes = sum(len(v["detections"]) for v in reference["images"].values())
    assert boxes >= 10, f"yolov5 {variant}: the reference has only {boxes} boxes, too few to prove anything"
    assert agent_matches_reference(path, fixture, reference, f"yolov5n {variant}") >= 10
