import numpy as np
import pytest

from agent.decoders.nms import iou, nms


def test_iou_known_values():
    a = np.array([[0, 0, 2, 2]], dtype=np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [2, 2, 4, 4], [0, 0, 1, 2]], dtype=np.float32)
    np.testing.assert_allclose(iou(a, b), [[1 / 7, 1.0, 0.0, 0.5]])
    assert iou(a[0], b[0]) == pytest.approx(1 / 7)
    assert iou(b, a).shape == (4, 1)


def test_iou_empty_boxes_are_zero_not_nan():
    z = np.array([0.5, 0.5, 0.5, 0.5])
    assert iou(z, z) == 0.0


def test_same_class_overlap_is_suppressed():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.05, 0.0, 1.05, 1.0], [2.0, 2.0, 3.0, 3.0]])
    scores = np.array([0.6, 0.9, 0.5])
    keep = nms(boxes, scores, np.array([0, 0, 0]), iou_threshold=0.5, max_detections=10)
    assert keep.tolist() == [1, 2]


def test_different_classes_both_kept():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, np.array([3, 7]), 0.5, 10).tolist() == [0, 1]
    # Class-agnostic when no class ids are given.
    assert nms(boxes, scores, None, 0.5, 10).tolist() == [0]


def test_iou_threshold_is_strict_above():
    # IoU of these two is exactly 1/3: suppressed at 0.3, kept at 1/3.
    boxes = np.array([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]])
    scores = np.array([0.9, 0.8])
    classes = np.array([0, 0])
    assert nms(boxes, scores, classes, 0.3, 10).tolist() == [0]
    assert nms(boxes, scores, classes, 0.34, 10).tolist() == [0, 1]


def test_max_detections_cap_keeps_best_scores_in_order():
    boxes = np.array([[i * 2.0, 0.0, i * 2.0 + 1.0, 1.0] for i in range(6)])
    scores = np.array([0.1, 0.7, 0.3, 0.9, 0.5, 0.2])
    keep = nms(boxes, scores, np.zeros(6, dtype=np.int64), 0.5, max_detections=3)
    assert keep.tolist() == [3, 1, 4]


def test_chain_suppression_is_greedy():
    # B overlaps A and C; A suppresses B, so C (not overlapping A) survives.
    boxes = np.array([[0.0, 0, 1, 1], [0.6, 0, 1.6, 1], [1.2, 0, 2.2, 1]])
    scores = np.array([0.9, 0.8, 0.7])
    assert nms(boxes, scores, np.zeros(3, dtype=np.int64), 0.2, 10).tolist() == [0, 2]


@pytest.mark.parametrize("n", [40, 600])  # the matrix path and the per-kept-box path
def test_large_and_small_paths_agree_with_reference(n):
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 1, (n, 2))
    wh = rng.uniform(0.05, 0.3, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.permutation(n) / n  # distinct scores: the greedy order is unambiguous
    classes = rng.integers(0, 3, n)
    keep = nms(boxes, scores, classes, 0.4, 1000)
    # Reference: plain-Python greedy NMS.
    expected: list[int] = []
    for i in np.argsort(-scores):
        if all(classes[j] != classes[i] or iou(boxes[i], boxes[j]) <= 0.4 for j in expected):
            expected.append(int(i))
    assert keep.tolist() == expected


def test_empty_input():
    assert nms(np.empty((0, 4)), np.empty(0), np.empty(0, dtype=np.int64), 0.5, 10).size == 0
