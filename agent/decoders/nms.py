"""Class-aware greedy non-maximum suppression, numpy-vectorized.

Runs on the candidates that survived the score threshold (tens, not thousands): up to a few
hundred, one pairwise overlap matrix; beyond that, per kept box the IoU against every remaining
candidate in one numpy expression, so the Python loop runs once per *kept* detection (at most
``max_detections``). Class-awareness shifts each class's boxes into their own disjoint coordinate range
(the torchvision ``batched_nms`` trick), so one pass suppresses only within a class.
"""

from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), both x1, y1, x2, y2; returns (N, M).

    A 1-D box (4,) is treated as a single row, and the matching result axis is dropped.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0.0, None) * np.clip(iy2 - iy1, 0.0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    if squeeze_a:
        out = out[0]
    if squeeze_b:
        out = out[..., 0]
    return out


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray | None,
    iou_threshold: float,
    max_detections: int,
) -> np.ndarray:
    """Indices of the boxes kept by class-aware greedy NMS, sorted by descending score.

    A box is suppressed when its IoU with a higher-scoring kept box of the same class is above
    ``iou_threshold``. ``class_ids=None`` suppresses across classes. At most ``max_detections``
    indices are returned. Ties in score keep the earlier index first (stable sort).
    """
    n = len(scores)
    if n == 0 or max_detections <= 0:
        return np.empty(0, dtype=np.intp)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    # float64: the class offsets below would cost float32 boxes their precision.
    b = np.asarray(boxes, dtype=np.float64)[order]
    if class_ids is not None and n > 1:
        lo, hi = b.min(), b.max()
        b = b - lo + (np.asarray(class_ids, dtype=np.float64)[order] * (hi - lo + 1.0))[:, None]
    greedy = _greedy_matrix if n <= _MATRIX_LIMIT else _greedy_passes
    return order[greedy(b, iou_threshold, max_detections)]


# Up to this many candidates one (n, n) overlap matrix is cheaper than n vectorized passes.
_MATRIX_LIMIT = 256


def _areas(b: np.ndarray) -> np.ndarray:
    return np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)


def _greedy_matrix(b: np.ndarray, iou_threshold: float, max_detections: int) -> np.ndarray:
    """Greedy NMS over score-sorted boxes using one pairwise overlap matrix."""
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = _areas(b)
    inter = np.maximum(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1), 0.0)
    inter *= np.maximum(np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1), 0.0)
    # IoU > t  <=>  inter > t * union: no division, and a zero union (two empty boxes) never suppresses.
    over = inter > iou_threshold * (areas[:, None] + areas - inter)
    removed = np.zeros(len(b), dtype=bool)
    keep: list[int] = []
    for i in range(len(b)):  # one step per candidate that survived the score threshold, not per anchor
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) >= max_detections:
            break
        removed |= over[i]
    return np.asarray(keep, dtype=np.intp)


def _greedy_passes(b: np.ndarray, iou_threshold: float, max_detections: int) -> np.ndarray:
    """Greedy NMS over score-sorted boxes: per kept box, its IoU against all remaining at once."""
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = _areas(b)
    remaining = np.arange(len(b))
    keep: list[int] = []
    while remaining.size:
        i = int(remaining[0])
        keep.append(i)
        if len(keep) >= max_detections:
            break
        rest = remaining[1:]
        inter = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
        inter *= np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
        remaining = rest[inter <= iou_threshold * (areas[i] + areas[rest] - inter)]
    return np.asarray(keep, dtype=np.intp)
