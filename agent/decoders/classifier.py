"""Image classifiers: one ``[1, C]`` output of class scores (or logits, with ``apply_softmax``).

Reports the top-k classes that reach the score threshold, best first, with ``boxes=None``.
Without softmax the ranking and the threshold run on the raw (possibly int8) values and only
k values are dequantized; softmax needs every logit, which for a C-sized vector is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from agent.decoders._common import ScoreGate, dequantize, describe, empty_output, require_count
from agent.decoders.base import DecodedOutput, Decoder, TensorInfo
from agent.errors import DecoderError
from agent.manifest import ClassifierDecoder, Thresholds


def _class_axis(shape: tuple[int, ...]) -> int | None:
    """Number of classes if the shape is [1, C] (or [C], [1, 1, 1, C]): one axis above 1."""
    if not shape or any(d < 1 for d in shape):
        return None
    big = [d for d in shape if d > 1]
    return big[0] if len(big) == 1 else (1 if not big else None)


class Classifier(Decoder):
    """Top-k classification; k is ``min(top_k, max_detections)``."""

    type_key = "classifier"
    spec_model = ClassifierDecoder

    def _bind(self) -> None:
        spec, num_classes, thresholds = self.spec, self.num_classes, self.thresholds
        require_count(self.type_key, self.outputs, 1, "[1, C] class scores")
        info = self.outputs[0]
        classes = _class_axis(info.shape)
        if classes is None:
            raise DecoderError(
                f"decoder 'classifier': output {info.name!r} has shape {list(info.shape)}, expected [1, C] class "
                f"scores.\n{describe(self.outputs)}\nSet decoder.type in model.json to the model's real output format."
            )
        if classes != num_classes:
            raise DecoderError(
                f"decoder 'classifier': output {info.name!r} has shape {list(info.shape)} ({classes} classes) but "
                f"labels in model.json lists {num_classes}. Make labels list one name per model class "
                "(include 'background' if the model has one)."
            )
        self._info = info
        self._softmax = bool(getattr(spec, "apply_softmax", False))
        self._top_k = int(getattr(spec, "top_k", 5))
        self._gate = ScoreGate(info)
        self._gate.update(thresholds.score)

    def set_thresholds(self, thresholds: Thresholds) -> None:
        super().set_thresholds(thresholds)
        self._gate.update(thresholds.score)

    def decode(self, outputs: Sequence[np.ndarray]) -> DecodedOutput:
        raw = outputs[0].reshape(-1)
        k = min(self._top_k, self.thresholds.max_detections, raw.size)
        if self._softmax:
            logits = dequantize(raw, self._info)
            exp = np.exp(logits - logits.max())  # shifted: no overflow for large logits
            probs = exp / exp.sum()
            top = _top_k_indices(probs, k)
            scores = probs[top]
            keep = scores >= np.float32(self.thresholds.score)
            top, scores = top[keep], scores[keep]
        else:
            top = _top_k_indices(raw, k)  # ranking is monotonic in the raw domain
            top = top[self._gate.mask(raw[top])]
            scores = dequantize(raw[top], self._info)
        if top.size == 0:
            return empty_output(with_boxes=False)
        return DecodedOutput(boxes=None, scores=scores.astype(np.float32), class_ids=top.astype(np.int64))

    @classmethod
    def guess(cls, outputs: Sequence[TensorInfo], num_classes: int | None) -> BaseModel | None:
        """A single ``[1, C]`` output (C == num_classes when known); softmax is assumed already applied."""
        if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[0] != 1:
            return None
        classes = outputs[0].shape[1]
        if num_classes is not None and classes != num_classes:
            return None
        return ClassifierDecoder() if classes >= 1 and math.prod(outputs[0].shape) == classes else None


def _top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (ties: lower index first)."""
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    n = values.size
    # Partition on the raw values (no negation: it would wrap uint8), then sort only the k.
    part = np.argpartition(values, n - k)[n - k :] if k < n else np.arange(n)
    return part[np.lexsort((part, -values[part].astype(np.float64)))]
