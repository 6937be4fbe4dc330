"""An SSD TFLite ending in the TFLite_Detection_PostProcess op (TF's own converter), float and uint8, loaded bare.

Reference: the op's own outputs when LiteRT runs the model (build_ssd_postprocess.py), mapped to frame
pixels by the SSD convention (frame stretched to the square input, RGB, [-1, 1] for the float model, raw
pixels for the uint8 one). The agent gets only the .tflite path: it must find the op's outputs, the
family's resize and input range, and give the same boxes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.detector import load_detector
from agent.manifest import Thresholds
from tests.conformance import refs
from tests.conformance.formats.conftest import load_reference, read_image

pytestmark = pytest.mark.slow


def test_reference_is_meaningful(ssd_postprocess: Path) -> None:
    """The op kept boxes above the threshold on most images, in several classes (else matching proves little)."""
    reference = load_reference(ssd_postprocess)
    for kind, model in reference["models"].items():
        rows = [d for image in model["images"].values() for d in image["detections"] if d["score"] >= reference["threshold"]]
        assert len(rows) >= 20, f"{kind}: only {len(rows)} reference boxes above the threshold"
        assert len({d["class_id"] for d in rows}) >= 2, f"{kind}: one class only"


@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_bare_model_matches_the_op(ssd_postprocess: Path, kind: str) -> None:
    reference = load_reference(ssd_postprocess)
    threshold = reference["threshold"]
    detector = load_detector(ssd_postprocess / f"{kind}.tflite", thresholds=Thresholds(score=threshold))
    problems, matched = [], 0
    try:
        assert detector.manifest.decoder.type == "ssd_postprocess", detector.manifest.decoder
        for image, expected in reference["models"][kind]["images"].items():
            found = detector.detect(read_image(ssd_postprocess, image))
            try:
                matched += refs.assert_detections_match(found, expected["detections"], threshold, f"{kind} {image}")
            except AssertionError as exc:
                problems.append(str(exc))
    finally:
        detector.close()
    assert not problems, f"{len(problems)} images differ ({matched} boxes matched):\n" + "\n".join(problems)
    assert matched >= 20, f"only {matched} boxes compared"
