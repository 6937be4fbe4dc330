"""Annotated images: boxes for detections, a legible top-k panel for classifications (no box to draw)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.annotate import PALETTE, draw_detections
from agent.schema import Box, Detection


def _grey(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), 128, np.uint8)


def _changed(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x1, y1, x2, y2)`` of the pixels that changed, or None."""
    ys, xs = np.nonzero(np.any(before != after, axis=2))
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if xs.size else None


def _classes(*scores: float) -> list[Detection]:
    return [Detection(class_id=i, label=f"class {i}", score=s) for i, s in enumerate(scores)]


def _bar_pixels(image: np.ndarray, class_id: int) -> np.ndarray:
    """Pixels painted in the class's exact bar colour (text is antialiased, the bar is not)."""
    return np.all(image == np.array(PALETTE[class_id % len(PALETTE)], np.uint8), axis=2)


def test_classification_draws_a_panel_in_the_top_left() -> None:
    image = _grey(640, 480)
    draw_detections(image, _classes(0.7, 0.2, 0.05))
    box = _changed(_grey(640, 480), image)
    assert box is not None, "a classification result drew nothing"
    x1, y1, x2, y2 = box
    assert x1 < 20 and y1 < 20 and x2 < 640 * 0.75 and y2 < 480 * 0.5
    assert image[y1 + 2, x1 + 2].max() < 128  # a darkened background behind the text


def test_panel_scales_with_the_image() -> None:
    sizes = {}
    for width, height in ((640, 360), (1280, 720), (2560, 1440)):
        image = _grey(width, height)
        draw_detections(image, _classes(0.6, 0.3))
        box = _changed(_grey(width, height), image)
        assert box is not None
        sizes[height] = (box[3] - box[1]) / height
    assert max(sizes.values()) < 1.3 * min(sizes.values()), f"panel height / image height: {sizes}"


def test_panel_stays_legible_on_a_thumbnail() -> None:
    image = _grey(160, 120)
    draw_detections(image, _classes(0.9))
    box = _changed(_grey(160, 120), image)
    assert box is not None and box[3] - box[1] >= 14  # Hershey text under ~10 px tall cannot be read


def test_bar_length_follows_the_score() -> None:
    high, low = _grey(800, 600), _grey(800, 600)
    draw_detections(high, [Detection(class_id=3, label="cat", score=0.8)])
    draw_detections(low, [Detection(class_id=3, label="cat", score=0.2)])
    ratio = _bar_pixels(high, 3).sum() / _bar_pixels(low, 3).sum()
    assert 3.6 < ratio < 4.4, f"bar area ratio {ratio:.2f} for scores 0.8 vs 0.2"


def test_best_class_is_the_first_row() -> None:
    image = _grey(640, 480)
    draw_detections(image, [Detection(class_id=1, label="b", score=0.1), Detection(class_id=2, label="a", score=0.6)])
    best_rows = np.nonzero(_bar_pixels(image, 2).any(axis=1))[0]
    other_rows = np.nonzero(_bar_pixels(image, 1).any(axis=1))[0]
    assert best_rows.size and other_rows.size and best_rows.max() < other_rows.min()


def test_long_label_is_cut_to_fit() -> None:
    image = _grey(320, 240)
    draw_detections(image, [Detection(class_id=0, label="very long name " * 100, score=0.5)])
    box = _changed(_grey(320, 240), image)
    assert box is not None and box[2] < 320  # the right edge stays untouched


@pytest.mark.parametrize("size", [(8, 8), (40, 12), (12, 40)])
def test_tiny_image_does_not_fail(size: tuple[int, int]) -> None:
    draw_detections(_grey(*size), _classes(0.5, 0.4))


def test_boxes_draw_no_panel() -> None:
    image = _grey(640, 480)
    det = Detection(class_id=0, label="cat", score=0.9, box=Box(x1=300, y1=200, x2=400, y2=300))
    draw_detections(image, [det])
    box = _changed(_grey(640, 480), image)
    assert box is not None and box[0] >= 290 and box[1] >= 180  # only the box and its tag, nothing in the corner


def test_http_annotated_and_snapshot_path_draws_the_panel() -> None:
    """``/v1/detect?annotated=1`` and ``/v1/snapshot`` draw through draw_detections_on: a classification gets the panel."""
    from agent.http.server import draw_detections_on
    from agent.schema import ModelRef, still_image_result

    result = still_image_result(
        frame_id=1,
        source_id="upload",
        image_size=(640, 480),
        model=ModelRef(name="classifier", version="1"),
        task="classify",
        detections=_classes(0.8, 0.1),
        captured=(0, 0.0),
        stage_ns=(0, 1, 2, 3),
    )
    image = draw_detections_on(_grey(640, 480), result)
    box = _changed(_grey(640, 480), image)
    assert box is not None and box[0] < 20 and box[1] < 20 and _bar_pixels(image, 0).any()


@pytest.mark.slow
def test_detect_save_annotated_draws_the_classifier_panel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``edge-agent detect --save-annotated`` path, with the TFLite-metadata classifier of the conformance suite."""
    from agent.detect_cli import detect_images
    from agent.detector import load_detector
    from tests.conformance.metadata.fixture import classifier_fixture

    fixture = classifier_fixture()
    model = tmp_path / "float_metadata.tflite"
    shutil.copyfile(fixture / model.name, model)
    image = fixture / "images" / "scene_02.png"
    detector = load_detector(model)
    try:
        assert detect_images(detector, [image], tmp_path / "out") == 0
    finally:
        detector.close()
    assert '"label"' in capsys.readouterr().out
    annotated = cv2.imread(str(tmp_path / "out" / "scene_02.annotated.jpg"))
    original = cv2.imread(str(image))
    corner, far = (slice(2, 40), slice(2, 60)), (slice(120, 160), slice(120, 160))
    # the panel darkens to 35% under its (white, thinner) text; the far corner only sees JPEG noise
    assert np.median(annotated[corner]) < 0.6 * np.median(original[corner]), "no darkened label panel in the top-left"
    assert abs(annotated[far].astype(float) - original[far]).mean() < 10
