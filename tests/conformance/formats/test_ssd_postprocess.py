"""An SSD TFLite ending in the TFLite_Detection_PostProcess op (TF's own converter), float, uint8 and int8, loaded bare.

Reference: the op's own outputs when LiteRT runs the model (build_ssd_postprocess.py), mapped to frame
pixels by the SSD convention (frame stretched to the square input, RGB, [-1, 1] for the float model, raw
pixels for the uint8 one, pixels - 128 for the int8 one). The agent gets only the .tflite path and the score
threshold: it must find the op's outputs (TF2 reorders them as StatefulPartitionedCall:0..3), the family's
resize and input range, and give the same boxes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.detector import Detector, load_detector
from agent.manifest import ColorOrder, InputSpec, ResizeMode, Thresholds
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


@pytest.mark.parametrize("kind", ["float", "uint8", "int8"])
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


@pytest.mark.parametrize("wrong", [{"resize": ResizeMode.letterbox}, {"color": ColorOrder.BGR}], ids=["letterbox", "bgr"])
def test_wrong_preprocessing_is_seen(ssd_postprocess: Path, wrong: dict[str, object]) -> None:
    """Control: the same model fed a letterboxed or BGR frame no longer matches, so the comparison sees preprocessing."""
    reference = load_reference(ssd_postprocess)
    threshold = reference["threshold"]
    bare = load_detector(ssd_postprocess / "float.tflite", thresholds=Thresholds(score=threshold))
    spec = InputSpec.model_validate({**bare.manifest.input.model_dump(), **wrong})
    detector = Detector(bare.path, bare.manifest.model_copy(update={"input": spec}), "control", bare.backend, bare.sha256)
    differing = 0
    try:
        for image, expected in reference["models"]["float"]["images"].items():
            try:
                refs.assert_detections_match(
                    detector.detect(read_image(ssd_postprocess, image)), expected["detections"], threshold, image
                )
            except AssertionError:
                differing += 1
    finally:
        bare.close()
    assert differing >= len(reference["models"]["float"]["images"]) // 2, f"only {differing} images changed under {wrong}"
