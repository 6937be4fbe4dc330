"""YOLO single-output heads: YOLOv5 ``[1, N, 5+C]`` and YOLOv8 ``[1, 4+C, N]`` (or ``[1, N, 4+C]``).

Both carry centre-format boxes (cx, cy, w, h) in input pixels (``boxes_normalized`` says 0..1)
and post-sigmoid scores, so the score threshold filters raw values directly: in the integer
domain for int8/uint8 outputs, and only the survivors are dequantized. NMS is class-aware.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from agent.decoders._common import (
    ScoreGate,
    center_to_corners,
    dequantize,
    describe,
    empty_output,
    require_count,
    suppress,
)
from agent.decoders.base import DecodedOutput, Decoder, TensorInfo
from agent.errors import DecoderError
from agent.manifest import Thresholds, YoloV5Decoder, YoloV8Decoder

# "N much larger than the channel count": anchors outnumber 4+C at least this many times.
_MIN_CANDIDATE_RATIO = 2


def _single_3d(type_key: str, outputs: Sequence[TensorInfo], expected: str) -> TensorInfo:
    require_count(type_key, outputs, 1, expected)
    info = outputs[0]
    if len(info.shape) != 3 or info.shape[0] != 1:
        raise DecoderError(
            f"decoder {type_key!r}: output {info.name!r} has shape {list(info.shape)}, expected {expected}.\n"
            f"{describe(outputs)}\nSet decoder.type in model.json to the model's real output format."
        )
    return info


def _single_3d_shape(outputs: Sequence[TensorInfo]) -> tuple[int, int] | None:
    if len(outputs) != 1 or len(outputs[0].shape) != 3 or outputs[0].shape[0] != 1:
        return None
    return outputs[0].shape[1], outputs[0].shape[2]


class YoloV8(Decoder):
    """Anchor-free YOLO (v8/v9/v11 exports): per candidate 4 box values then C class scores, no objectness."""

    type_key = "yolov8"
    spec_model = YoloV8Decoder

    def _bind(self) -> None:
        spec, num_classes, thresholds = self.spec, self.num_classes, self.thresholds
        info = _single_3d(self.type_key, self.outputs, f"[1, 4+C, N] with C={num_classes} classes")
        channels = 4 + num_classes
        _, a, b = info.shape
        if a == channels:
            self._channels_first, n = True, b
        elif b == channels:
            self._channels_first, n = False, a
        else:
            hint = (
                f"It has 5+C={channels + 1} values per candidate, which is the yolov5 layout: set decoder.type "
                "to 'yolov5' in model.json."
                if channels + 1 in (a, b)
                else f"Its smaller axis suggests {min(a, b) - 4} classes: make labels in model.json list exactly the "
                "model's classes, or set decoder.type to the model's real format."
            )
            raise DecoderError(
                f"decoder 'yolov8': output {info.name!r} has shape {list(info.shape)}, but with {num_classes} labels "
                f"one axis must be 4+C={channels} (expected [1, {channels}, N] or [1, N, {channels}]). {hint}"
            )
        self._info = info
        # Reused every frame: the best class score per candidate, in the raw dtype.
        self._best = np.empty(n, dtype=info.dtype)
        self._gate = ScoreGate(info)
        self._gate.update(thresholds.score)
        normalized = getattr(spec, "boxes_normalized", False)
        self._box_w, self._box_h = (1.0, 1.0) if normalized else (float(self.input_width), float(self.input_height))

    def set_thresholds(self, thresholds: Thresholds) -> None:
        super().set_thresholds(thresholds)
        self._gate.update(thresholds.score)

    def decode(self, outputs: Sequence[np.ndarray]) -> DecodedOutput:
        raw = outputs[0][0]
        best = self._best if raw.dtype == self._best.dtype else None
        # The max over class rows is monotonic in the raw domain, so it runs on int8 as-is.
        class_rows = raw[4:] if self._channels_first else raw[:, 4:]
        best = np.max(class_rows, axis=0 if self._channels_first else 1, out=best)
        idx = self._gate.indices(best)
        if idx.size == 0:
            return empty_output()
        cand_raw = raw[:, idx].T if self._channels_first else raw[idx]  # (k, 4+C), survivors only
        class_ids = np.argmax(cand_raw[:, 4:], axis=1)
        cand = dequantize(cand_raw, self._info)
        scores = cand[np.arange(idx.size), 4 + class_ids]
        boxes = center_to_corners(cand[:, :4], self._box_w, self._box_h)
        return suppress(boxes, scores, class_ids, self.thresholds)

    @classmethod
    def guess(cls, outputs: Sequence[TensorInfo], num_classes: int | None) -> BaseModel | None:
        """``[1, 4+C, N]`` with N much larger than 4+C; ``[1, N, 4+C]`` only when num_classes says so.

        Guessed specs assume boxes in input pixels (``boxes_normalized=False``); a manifest must
        say otherwise for exports that emit 0..1 boxes (Ultralytics TFLite exports normalize them).
        """
        shape = _single_3d_shape(outputs)
        if shape is None:
            return None
        a, b = shape
        if num_classes is not None:
            channels = 4 + num_classes
            if (a == channels and b > a) or (b == channels and a > b):
                return YoloV8Decoder()
            return None
        # Without a class count, [1, N, D] is read as yolov5 (the historical layout of that orientation).
        if a >= 5 and b >= _MIN_CANDIDATE_RATIO * a:
            return YoloV8Decoder()
        return None


class YoloV5(Decoder):
    """Anchor-based YOLO (v5/v7 exports with decoded grid): cx, cy, w, h, objectness, C class scores."""

    type_key = "yolov5"
    spec_model = YoloV5Decoder

    def _bind(self) -> None:
        spec, num_classes, thresholds = self.spec, self.num_classes, self.thresholds
        info = _single_3d(self.type_key, self.outputs, f"[1, N, 5+C] with C={num_classes} classes")
        width = 5 + num_classes
        if info.shape[2] != width:
            if info.shape[2] == width - 1 or info.shape[1] == width - 1:
                hint = "It has 4+C values per candidate, the yolov8 layout: set decoder.type to 'yolov8' in model.json."
            elif info.shape[1] == width:
                hint = "The class axis comes first; this decoder needs [1, N, 5+C] (re-export without transposing)."
            else:
                hint = "Check that labels in model.json lists exactly the model's classes."
            raise DecoderError(
                f"decoder 'yolov5': output {info.name!r} has shape {list(info.shape)}, but with {num_classes} labels "
                f"the last axis must be 5+C={width} (expected [1, N, {width}]). {hint}"
            )
        self._info = info
        # Objectness gates first: score = obj * cls <= obj, so obj < threshold can never pass.
        self._gate = ScoreGate(info)
        self._gate.update(thresholds.score)
        normalized = getattr(spec, "boxes_normalized", False)
        self._box_w, self._box_h = (1.0, 1.0) if normalized else (float(self.input_width), float(self.input_height))

    def set_thresholds(self, thresholds: Thresholds) -> None:
        super().set_thresholds(thresholds)
        self._gate.update(thresholds.score)

    def decode(self, outputs: Sequence[np.ndarray]) -> DecodedOutput:
        raw = outputs[0][0]
        idx = self._gate.indices(raw[:, 4])
        if idx.size == 0:
            return empty_output()
        cand = dequantize(raw[idx], self._info)  # (k, 5+C), survivors only
        class_scores = cand[:, 5:] * cand[:, 4:5]
        class_ids = np.argmax(class_scores, axis=1)
        scores = class_scores[np.arange(idx.size), class_ids]
        passing = scores >= np.float32(self.thresholds.score)
        if not passing.all():
            cand, scores, class_ids = cand[passing], scores[passing], class_ids[passing]
        boxes = center_to_corners(cand[:, :4], self._box_w, self._box_h)
        return suppress(boxes, scores, class_ids, self.thresholds)

    @classmethod
    def guess(cls, outputs: Sequence[TensorInfo], num_classes: int | None) -> BaseModel | None:
        """``[1, N, 5+C]`` with N much larger than 5+C (5+C must match num_classes when known).

        Guessed specs assume boxes in input pixels (``boxes_normalized=False``); a manifest must
        say otherwise for exports that emit 0..1 boxes.
        """
        shape = _single_3d_shape(outputs)
        if shape is None:
            return None
        n, width = shape
        if num_classes is not None and width != 5 + num_classes:
            return None
        if width >= 6 and n >= _MIN_CANDIDATE_RATIO * width:
            return YoloV5Decoder()
        return None
