"""RT-DETR-L as Ultralytics 8.4 exports it: one [1, 300, 6] output whose rows are cx, cy, w, h normalized to 0..1,
score and class, fed a frame stretched (not letterboxed) to the square input.

Oracle: Ultralytics' RT-DETR predictor on the very file (random weights given structure, build_rtdetr.py), with
tests/conformance/refs.py's bounds. The bare loader tells an RT-DETR export from a YOLO end-to-end head by its
ONNX metadata (``head: RTDETRDecoder``): centre/size boxes in 0..1, the frame stretched to the input.
"""

from __future__ import annotations

import pytest

from tests.conformance.ultralytics.fixtures import VariantMissing, agent_matches_reference, rtdetr_fixture, variant_file

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", ["onnx", "onnx-dynamic"])
def test_rtdetr_export_matches_predict(variant: str) -> None:
    fixture = rtdetr_fixture()
    try:
        path, reference = variant_file(fixture, variant)
    except VariantMissing as exc:
        pytest.fail(str(exc))
    boxes = sum(len(v["detections"]) for v in reference["images"].values())
    assert boxes >= 10, f"rtdetr {variant}: the reference has only {boxes} boxes, too few to prove anything"
    agent_matches_reference(path, fixture, reference, f"rtdetr-l {variant}")
