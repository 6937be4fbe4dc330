"""Draw results on a BGR image (snapshots, ``detect --save-annotated``, HTTP ``?annotated=1``).

Detections get a box and a ``label score`` tag; classifications (results without a box) get one
top-k panel in the top-left corner: a row per class with its label, its score and a bar as long as
the score, on a darkened background, scaled to the image so it stays legible from a thumbnail to 4K.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from agent.schema import Detection

#: box and bar colours (BGR), by class id
PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72), (23, 204, 146)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_PANEL_SHADE = 0.35  # the panel keeps this much of the image under it: legible text, scene still visible
_PANEL_ROWS = 10  # classifiers report top-k; more rows than this would hide the image


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """Boxes with ``label score`` tags, and a top-k panel for box-less (classifier) results, drawn in place on ``image``."""
    thickness = max(1, round(min(image.shape[:2]) / 300))
    classes = [det for det in detections if det.box is None]
    for det in detections:
        if det.box is None:
            continue
        color = PALETTE[det.class_id % len(PALETTE)]
        p1 = (int(det.box.x1), int(det.box.y1))
        p2 = (int(det.box.x2), int(det.box.y2))
        cv2.rectangle(image, p1, p2, color, thickness, cv2.LINE_AA)
        tag = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(tag, _FONT, 0.5, 1)
        y = max(p1[1], th + base)
        cv2.rectangle(image, (p1[0], y - th - base), (p1[0] + tw, y), color, -1)
        cv2.putText(image, tag, (p1[0], y - base), _FONT, 0.5, _WHITE, 1, cv2.LINE_AA)
    if classes:
        draw_class_panel(image, classes)
    return image


def _fit(text: str, limit: int, scale: float, thickness: int) -> str:
    """``text`` cut with ``...`` until it is at most ``limit`` pixels wide."""
    if cv2.getTextSize(text, _FONT, scale, thickness)[0][0] <= limit:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, scale, thickness)[0][0] > limit:
        text = text[:-1]
    return text + "..."


def draw_class_panel(image: np.ndarray, classes: Sequence[Detection]) -> np.ndarray:
    """The top-k panel: one row per class, best first (label, score, and a bar of the score's length)."""
    height, width = image.shape[:2]
    rows = sorted(classes, key=lambda d: -d.score)[:_PANEL_ROWS]
    # text about 1/30 of the shorter side, never below Hershey's legible minimum
    scale = max(0.35, min(height, width) / 900)
    thickness = max(1, round(scale * 1.6))
    (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, thickness)
    pad = max(2, text_h // 3)
    bar_h = max(2, text_h // 3)
    row_h = text_h + base + bar_h + pad
    margin = pad
    max_panel = width - 2 * margin
    scores = [f"{d.score:.2f}" for d in rows]
    score_w = max(cv2.getTextSize(s, _FONT, scale, thickness)[0][0] for s in scores)
    gap = cv2.getTextSize("  ", _FONT, scale, thickness)[0][0]
    label_room = max(0, max_panel - 2 * pad - gap - score_w)
    labels = [_fit(d.label, label_room, scale, thickness) for d in rows]
    label_w = max(cv2.getTextSize(t, _FONT, scale, thickness)[0][0] for t in labels)
    panel_w = min(max_panel, 2 * pad + label_w + gap + score_w)
    panel_h = min(height - 2 * margin, pad + row_h * len(rows))
    if panel_w <= 0 or panel_h <= 0:
        return image  # too small to hold any text
    x0, y0 = margin, margin
    region = image[y0 : y0 + panel_h, x0 : x0 + panel_w]
    cv2.addWeighted(region, _PANEL_SHADE, np.zeros_like(region), 0.0, 0.0, dst=region)  # darken in place
    inner = panel_w - 2 * pad
    for i, (det, label, score) in enumerate(zip(rows, labels, scores, strict=True)):
        top = y0 + pad + i * row_h
        if top + text_h + base > y0 + panel_h:
            break  # the image is too short for more rows
        baseline = top + text_h
        cv2.putText(image, label, (x0 + pad, baseline), _FONT, scale, _WHITE, thickness, cv2.LINE_AA)
        sw = cv2.getTextSize(score, _FONT, scale, thickness)[0][0]
        cv2.putText(image, score, (x0 + panel_w - pad - sw, baseline), _FONT, scale, _WHITE, thickness, cv2.LINE_AA)
        bar_top = baseline + base
        bar_end = x0 + pad + round(inner * min(1.0, max(0.0, det.score)))
        if bar_end > x0 + pad:
            color = PALETTE[det.class_id % len(PALETTE)]
            cv2.rectangle(image, (x0 + pad, bar_top), (bar_end - 1, bar_top + bar_h - 1), color, -1)
    return image
