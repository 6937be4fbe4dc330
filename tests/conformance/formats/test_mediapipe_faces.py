"""MediaPipe's real face detectors (BlazeFace short and full range, from the mediapipe wheel), loaded bare.

Reference: MediaPipe's own face detection solution on the same photographs (build_mediapipe.py), i.e. its
letterbox (black border), [-1, 1] input, SSD anchors, decoding and weighted NMS. Two ways in: truly bare (the
.tflite path and nothing else: the thresholds must come from the family convention too), and with the thresholds
the MediaPipe graph itself applies (score 0.5 short range, 0.6 full range; suppression IoU 0.3) given as a user
gives them in the config, which isolates preprocessing and decoding from the threshold defaults.
Faceless photos (a cat, coffee, a motorcycle) must give no face: fed [0, 1] instead of [-1, 1], the
short-range model calls the cat a face.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.detector import load_detector
from agent.manifest import Thresholds
from tests.conformance import refs
from tests.conformance.formats.conftest import load_reference, read_image

pytestmark = pytest.mark.slow

MEDIAPIPE_IOU = 0.3  # the graphs' NonMaxSuppressionCalculator min_suppression_threshold (WEIGHTED)
MODELS = {
    "short_range": "face_detection_short_range.tflite",
    "full_range": "face_detection_full_range_sparse.tflite",
}


def test_reference_is_meaningful(mediapipe_faces: Path) -> None:
    """The oracle itself finds the astronaut's face and no face on the cat (else the comparison proves little)."""
    for name in MODELS:
        images = load_reference(mediapipe_faces, f"reference_{name}.json")["images"]
        assert len(images["astronaut.png"]["detections"]) == 1, name
        assert images["cat.png"]["detections"] == [], name
        assert images["coffee.png"]["detections"] == [], name


@pytest.mark.parametrize("config", ["bare", "graph_thresholds"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_mediapipe(mediapipe_faces: Path, name: str, config: str) -> None:
    reference = load_reference(mediapipe_faces, f"reference_{name}.json")
    threshold = reference["threshold"]
    given = Thresholds(score=threshold, iou=MEDIAPIPE_IOU) if config == "graph_thresholds" else None
    detector = load_detector(mediapipe_faces / MODELS[name], thresholds=given)
    problems, matched = [], 0
    try:
        for image, expected in reference["images"].items():
            found = detector.detect(read_image(mediapipe_faces, image))
            try:
                matched += refs.assert_detections_match(found, expected["detections"], threshold, f"{name} {image}")
            except AssertionError as exc:
                problems.append(str(exc))
    finally:
        detector.close()
    assert not problems, f"{len(problems)} of {len(reference['images'])} images differ ({matched} faces matched):\n" + (
        "\n".join(problems)
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_faceless_photos_give_no_face(mediapipe_faces: Path, name: str) -> None:
    """The cat, coffee and motorcycle photos: no face from MediaPipe, none from the agent (fed [-1, 1], not [0, 1])."""
    reference = load_reference(mediapipe_faces, f"reference_{name}.json")
    detector = load_detector(
        mediapipe_faces / MODELS[name], thresholds=Thresholds(score=reference["threshold"], iou=MEDIAPIPE_IOU)
    )
    try:
        for image in ("cat.png", "coffee.png", "motorcycle.png"):
            assert reference["images"][image]["detections"] == [], f"MediaPipe found a face on {image}"
            found = detector.detect(read_image(mediapipe_faces, image))
            assert not found, f"{name}: the agent finds a face on {image}: {[(d.score, d.box) for d in found]}"
    finally:
        detector.close()
