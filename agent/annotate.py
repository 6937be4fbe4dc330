"""Draw detections on a BGR image (snapshots, ``detect --save-annotated``)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from agent.schema import Detection

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72), (23, 204, 146)]


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """Boxes and ``label score`` tags drawn in place on ``image`` (which is returned)."""
    thickness = max(1, round(min(image.shape[:2]) / 300))
    for det in detections:
        if det.box is None:
            continue
        color = _PALETTE[det.class_id % len(_PALETTE)]
        p1 = (int(det.box.x1), int(det.box.y1))
        p2 = (int(det.box.x2), int(det.box.y2))
        cv2.rectangle(image, p1, p2, color, thickness, cv2.LINE_AA)
        tag = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(tag, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y = max(p1[1], th + base)
        cv2.rectangle(image, (p1[0], y - th - base), (p1[0] + tw, y), color, -1)
        cv2.putText(image, tag, (p1[0], y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image
