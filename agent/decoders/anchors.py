"""MediaPipe-style SSD heads (BlazeFace, palm, pose detectors): raw regressors + scores + generated anchors.

The model emits box regressors ``[1, A, 4+K]`` (K extra keypoint values, ignored) and raw scores
``[1, A, C]``; the anchors are not in the model, they are generated once at construction exactly
as MediaPipe's ``SsdAnchorsCalculator`` does, and the boxes decoded as its
``TfLiteTensorsToDetectionsCalculator`` does (linear box size, no exponential). Scores are
thresholded in the logit domain (and in the integer domain for int8 outputs) so the sigmoid and
the box decode run on survivors only. Overlaps are resolved as MediaPipe's detector graphs do it
(``NonMaxSuppressionCalculator`` with ``algorithm: WEIGHTED``): a kept box is the score-weighted
mean of the boxes it suppresses, not the top box alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from agent.decoders._common import ScoreGate, clip_unit, dequantize, describe, empty_output, require_count, sigmoid
from agent.decoders.base import DecodedOutput, Decoder, TensorInfo
from agent.decoders.nms import iou
from agent.errors import DecoderError
from agent.manifest import AnchorsDecoder, Thresholds

# Anchor configs of published MediaPipe detectors, keyed by anchor count (for auto-detection only).
_PRESETS: dict[int, AnchorsDecoder] = {
    # face_detection_short_range.tflite: 128x128 input, 512 + 384 anchors.
    896: AnchorsDecoder(num_layers=4, strides=(8, 16, 16, 16)),
    # face_detection_full_range.tflite: 192x192 input, one 48x48 layer, one anchor per cell.
    2304: AnchorsDecoder(
        num_layers=1, strides=(4,), interpolated_scale_aspect_ratio=0.0, x_scale=192.0, y_scale=192.0,
        w_scale=192.0, h_scale=192.0,
    ),
}


def _layer_scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def generate_anchors(spec: AnchorsDecoder, input_width: int, input_height: int) -> tuple[np.ndarray, list[str]]:
    """MediaPipe SsdAnchorsCalculator: (A, 4) float32 rows of x_center, y_center, w, h in 0..1.

    Also returns one human-readable line per stride group, for anchor-count error messages.
    Layers sharing a stride are merged into one feature map with all their anchors per cell,
    ordered row, column, anchor, as MediaPipe orders them.
    """
    blocks: list[np.ndarray] = []
    notes: list[str] = []
    n = spec.num_layers
    layer = 0
    while layer < n:
        ratios: list[float] = []
        scales: list[float] = []
        last = layer
        while last < n and spec.strides[last] == spec.strides[layer]:
            scale = _layer_scale(spec.min_scale, spec.max_scale, last, n)
            if last == 0 and spec.reduce_boxes_in_lowest_layer:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                ratios += list(spec.aspect_ratios)
                scales += [scale] * len(spec.aspect_ratios)
                if spec.interpolated_scale_aspect_ratio > 0.0:
                    nxt = 1.0 if last == n - 1 else _layer_scale(spec.min_scale, spec.max_scale, last + 1, n)
                    scales.append(math.sqrt(scale * nxt))
                    ratios.append(spec.interpolated_scale_aspect_ratio)
            last += 1
        stride = spec.strides[layer]
        rows, cols = math.ceil(input_height / stride), math.ceil(input_width / stride)
        per_cell = len(scales)
        ratio_sqrt = np.sqrt(np.asarray(ratios, dtype=np.float64))
        if spec.fixed_anchor_size:
            widths = heights = np.ones(per_cell)
        else:
            widths, heights = np.asarray(scales) * ratio_sqrt, np.asarray(scales) / ratio_sqrt
        cy = (np.arange(rows) + spec.anchor_offset_y) / rows
        cx = (np.arange(cols) + spec.anchor_offset_x) / cols
        shape = (rows, cols, per_cell)
        block = np.stack(
            (
                np.broadcast_to(cx[None, :, None], shape),
                np.broadcast_to(cy[:, None, None], shape),
                np.broadcast_to(widths[None, None, :], shape),
                np.broadcast_to(heights[None, None, :], shape),
            ),
            axis=-1,
        ).reshape(-1, 4)
        blocks.append(block)
        notes.append(
            f"layers {layer}..{last - 1} stride {stride}: {rows}x{cols} cells x {per_cell} anchors = {block.shape[0]}"
        )
        layer = last
    return np.concatenate(blocks).astype(np.float32), notes


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, thresholds: Thresholds) -> DecodedOutput:
    """MediaPipe's WEIGHTED suppression, per class: the best remaining box absorbs every same-class box whose IoU
    with it exceeds ``thresholds.iou`` (itself included) and becomes their score-weighted mean box; it keeps its
    own score. Runs once per kept detection, on the few score-filtered candidates.
    """
    remaining = np.argsort(-scores, kind="stable")
    kept_boxes: list[np.ndarray] = []
    kept: list[int] = []
    while remaining.size and len(kept) < thresholds.max_detections:
        top = remaining[0]
        merged = (class_ids[remaining] == class_ids[top]) & (np.atleast_1d(iou(boxes[top], boxes[remaining])) > thresholds.iou)
        merged[0] = True  # a zero-area box has IoU 0 even with itself
        members = remaining[merged]
        weights = scores[members].astype(np.float64)
        total = weights.sum()
        kept_boxes.append(weights @ boxes[members] / total if total > 0 else boxes[top])
        kept.append(int(top))
        remaining = remaining[~merged]
    if not kept:
        return empty_output()
    return DecodedOutput(
        boxes=clip_unit(np.asarray(kept_boxes, dtype=np.float32)),
        scores=scores[kept].astype(np.float32, copy=False),
        class_ids=class_ids[kept].astype(np.int64, copy=False),
    )


def _assign_outputs(outputs: Sequence[TensorInfo], num_classes: int | None) -> tuple[int, int] | None:
    """(regressors, scores) indices of two [1, A, D] outputs, by name, then by shape, else MediaPipe's order."""
    if len(outputs) != 2 or any(len(o.shape) != 3 or o.shape[0] != 1 for o in outputs):
        return None
    if outputs[0].shape[1] != outputs[1].shape[1]:
        return None
    for r, s in ((0, 1), (1, 0)):
        rname, sname = outputs[r].name.lower(), outputs[s].name.lower()
        if any(w in rname for w in ("regress", "box", "location")) or any(w in sname for w in ("classif", "score", "conf")):
            return r, s

    def feasible(r: int, s: int) -> bool:
        d_s = outputs[s].shape[2]
        fits_scores = d_s == 1 or (d_s == num_classes if num_classes is not None else d_s <= outputs[r].shape[2])
        return outputs[r].shape[2] >= 4 and fits_scores

    options = [(r, s) for r, s in ((0, 1), (1, 0)) if feasible(r, s)]
    return options[0] if options else None


class SSDAnchors(Decoder):
    """Raw SSD head decoded against generated anchors, sigmoid scores, class-aware NMS."""

    type_key = "ssd_anchors"
    spec_model = AnchorsDecoder

    def _bind(self) -> None:
        spec, num_classes, thresholds = self.spec, self.num_classes, self.thresholds
        if not isinstance(spec, AnchorsDecoder):
            raise TypeError(f"ssd_anchors needs an AnchorsDecoder spec, got {type(spec).__name__}")
        expected = "box regressors [1, A, 4+K] and scores [1, A, C]"
        require_count(self.type_key, self.outputs, 2, expected)
        pair = _assign_outputs(self.outputs, num_classes)
        if pair is None:
            raise DecoderError(
                f"decoder 'ssd_anchors' expects {expected} with C={num_classes} (or 1), got:\n"
                f"{describe(self.outputs)}\nSet decoder.type in model.json to the model's real output format."
            )
        self._reg, self._cls = pair
        self._anchors, notes = generate_anchors(spec, self.input_width, self.input_height)
        for info in self.outputs:
            if info.shape[1] != len(self._anchors):
                raise DecoderError(
                    f"decoder 'ssd_anchors': output {info.name!r} has shape {list(info.shape)}, i.e. "
                    f"{info.shape[1]} anchors, but the anchor config generates {len(self._anchors)} for a "
                    f"{self.input_width}x{self.input_height} input:\n  " + "\n  ".join(notes) + "\n"
                    "Set decoder.num_layers, strides, aspect_ratios, interpolated_scale_aspect_ratio and "
                    "reduce_boxes_in_lowest_layer in model.json to the model's anchor options "
                    "(and input.width/height to its input size)."
                )
        cls_info = self.outputs[self._cls]
        self._cls_info, self._reg_info = cls_info, self.outputs[self._reg]
        self._multi_class = cls_info.shape[2] > 1
        self._best = np.empty(cls_info.shape[1], dtype=cls_info.dtype)  # reused: best raw score per anchor
        self._sigmoid = spec.score_activation == "sigmoid"
        self._gate = ScoreGate(cls_info, sigmoid=self._sigmoid)
        self._gate.update(thresholds.score)
        self._xy_first = spec.box_order == "xywh"
        self._divisors = np.array([spec.x_scale, spec.y_scale, spec.w_scale, spec.h_scale], dtype=np.float32)

    @property
    def anchors(self) -> np.ndarray:
        """The generated anchors, (A, 4) x_center, y_center, w, h in 0..1."""
        return self._anchors

    def set_thresholds(self, thresholds: Thresholds) -> None:
        super().set_thresholds(thresholds)
        self._gate.update(thresholds.score)

    def decode(self, outputs: Sequence[np.ndarray]) -> DecodedOutput:
        scores_raw = outputs[self._cls][0]
        if self._multi_class:
            best = self._best if scores_raw.dtype == self._best.dtype else None
            best = np.max(scores_raw, axis=1, out=best)
        else:
            best = scores_raw[:, 0]
        idx = self._gate.indices(best)
        if idx.size == 0:
            return empty_output()
        class_ids = np.argmax(scores_raw[idx], axis=1) if self._multi_class else np.zeros(idx.size, dtype=np.int64)
        scores = dequantize(best[idx], self._cls_info)
        if self._sigmoid:
            scores = sigmoid(scores)
        reg = dequantize(outputs[self._reg][0][idx, :4], self._reg_info)
        if not self._xy_first:
            reg = reg[:, [1, 0, 3, 2]]  # y, x, h, w -> x, y, w, h
        reg = reg / self._divisors
        anchors = self._anchors[idx]
        cx = reg[:, 0] * anchors[:, 2] + anchors[:, 0]
        cy = reg[:, 1] * anchors[:, 3] + anchors[:, 1]
        half_w, half_h = reg[:, 2] * anchors[:, 2] * 0.5, reg[:, 3] * anchors[:, 3] * 0.5
        # merged before clipping, as MediaPipe does (it never clips); the kept boxes are clipped to the input
        boxes = np.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), axis=1)
        return weighted_nms(boxes, scores, class_ids, self.thresholds)

    @classmethod
    def guess(cls, outputs: Sequence[TensorInfo], num_classes: int | None) -> BaseModel | None:
        """Two ``[1, A, D]`` outputs (regressors, scores); known MediaPipe anchor counts get their config.

        Anchors cannot be read from a model: any other count gets the default options, which
        the decoder then rejects with the generated-vs-found anchor counts unless the manifest
        sets the real ones.
        """
        pair = _assign_outputs(outputs, num_classes)
        if pair is None:
            return None
        return _PRESETS.get(outputs[0].shape[1], AnchorsDecoder())
