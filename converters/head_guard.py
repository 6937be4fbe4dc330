"""The int8 detection-head guard.

Known failure (Ultralytics PR #1695/#3837/#7372, RKNN #25524): a YOLO head concatenates box coordinates
in input pixels (0..640) with sigmoid scores (0..1) in ONE tensor; per-tensor int8 gives both one scale
and every score rounds to 0: the model detects nothing. We measure the value ranges of the float
model's output channels on calibration images and, for int8, keep the head (the ops from the last
convolutions to the output) in float; the fix costs ~0.2% of the compute of a small detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.decoders.base import TensorInfo

RATIO_LIMIT = 8.0  # box range / score range above this: one int8 scale cannot serve both


@dataclass(frozen=True, slots=True)
class HeadReport:
    checked: bool
    mixed_ranges: bool
    box_range: float
    score_range: float
    message: str

    def as_dict(self, float_head: bool) -> dict[str, object]:
        return {
            "checked": self.checked,
            "mixed_ranges": self.mixed_ranges,
            "box_max": round(self.box_range, 4),
            "score_max": round(self.score_range, 4),
            "head_kept_float": float_head,
            "note": self.message,
        }


def _yolo_rows(spec: object, outputs: list[tuple[TensorInfo, np.ndarray]]) -> tuple[np.ndarray, np.ndarray] | None:
    kind = getattr(spec, "type", "")
    if kind not in ("yolov8", "yolov5") or len(outputs) != 1:
        return None
    info, values = outputs[0]
    if len(info.shape) != 3:
        return None
    v = values.astype(np.float32)
    rows_first = info.shape[1] < info.shape[2]  # [1, 4+C, N] vs [1, N, 4+C]
    v = v if rows_first else v.transpose(0, 2, 1)
    first_score = 5 if kind == "yolov5" else 4
    return v[:, :4], v[:, first_score:]


def inspect(spec: object, outputs: list[tuple[TensorInfo, np.ndarray]]) -> HeadReport:
    """Does one output tensor mix box coordinates and scores of very different ranges?"""
    rows = _yolo_rows(spec, outputs)
    if rows is None:
        return HeadReport(False, False, 0.0, 0.0, "boxes and scores are separate outputs (or not a YOLO head)")
    boxes, scores = rows
    box_max = float(np.abs(boxes).max())
    score_max = float(np.abs(scores).max()) or 1e-6
    mixed = box_max / max(score_max, 1.0) > RATIO_LIMIT
    msg = (
        f"boxes (up to {box_max:.3g}) and scores (up to {score_max:.3g}) share one output tensor: "
        "a shared int8 scale would round the scores to 0"
        if mixed
        else f"boxes (up to {box_max:.3g}) and scores share one tensor with compatible ranges"
    )
    return HeadReport(True, mixed, box_max, score_max, msg)


def boxes_look_normalized(spec: object, outputs: list[tuple[TensorInfo, np.ndarray]]) -> bool:
    rows = _yolo_rows(spec, outputs)
    return rows is not None and float(np.abs(rows[0]).max()) <= 1.5
