"""What the decoder plugins share: raw-domain score gates, survivor dequantization, box helpers.

A quantized detector emits thousands of int8/uint8 candidates per frame of which a handful
survive the score threshold. Converting the threshold once into the tensor's integer domain
(and into the logit domain when the decoder applies the sigmoid) lets a decoder filter with an
integer compare on the raw array and dequantize only the survivors, as Frigate's EdgeTPU DFL
path does. Float tensors use the same gate with a float threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from agent.decoders.base import DecodedOutput, TensorInfo
from agent.decoders.nms import nms
from agent.errors import DecoderError
from agent.manifest import Thresholds

# Float error in ``zero_point + t / scale`` must not push an exact boundary up one step.
_CEIL_SLACK = 1e-6


def logit(p: float) -> float:
    """Inverse sigmoid, with 0 -> -inf and 1 -> +inf (a threshold nothing / everything passes)."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Float32 logistic function (only ever applied to survivors)."""
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32, copy=False)))).astype(np.float32, copy=False)


def dequantize(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    """``scale * (q - zero_point)`` as float32 for a quantized tensor; float tensors pass through as float32."""
    if info.quantized:
        return (raw.astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)
    return raw.astype(np.float32, copy=False)


class ScoreGate:
    """``raw >= threshold`` for one output tensor, with the threshold kept in the tensor's own domain.

    ``sigmoid=True`` means the tensor holds logits that the decoder turns into probabilities, so
    the threshold is moved into the logit domain first. ``strictly_positive=True`` additionally
    rejects scores <= 0 (padding rows of end-to-end models) even at threshold 0.
    """

    def __init__(self, info: TensorInfo, *, sigmoid: bool = False, strictly_positive: bool = False) -> None:
        self.info = info
        self.sigmoid = sigmoid
        self.strictly_positive = strictly_positive
        # (raw threshold, nothing can pass): one tuple, swapped in one assignment, so a remote
        # set_thresholds on another thread never shows decode a half-updated gate.
        self._state: tuple[np.generic, bool] = (np.float32(0.0), False)

    @property
    def threshold(self) -> np.generic:
        """The threshold in the tensor's raw domain (same dtype as the tensor for int8/uint8)."""
        return self._state[0]

    @property
    def never(self) -> bool:
        """True when the threshold lies above anything the tensor can hold."""
        return self._state[1]

    def update(self, score: float) -> None:
        """Recompute the raw-domain threshold for a new score threshold (build time and set_thresholds)."""
        real = logit(score) if self.sigmoid else score
        info = self.info
        if info.quantized:
            limits = np.iinfo(info.dtype)
            if math.isinf(real):
                q = limits.min if real < 0 else limits.max + 1
            else:
                q = math.ceil(info.zero_point + real / info.scale - _CEIL_SLACK)
            if self.strictly_positive and not self.sigmoid:  # a sigmoid is never <= 0
                q = max(q, info.zero_point + 1)  # real > 0  <=>  q > zero_point
            # Same dtype as the tensor: the compare then runs on the raw int8/uint8 array, no upcast.
            self._state = (info.dtype.type(min(max(q, limits.min), limits.max)), q > limits.max)
            return
        dtype = info.dtype if info.dtype.kind == "f" else np.dtype(np.float32)
        never = real == math.inf
        value = dtype.type(0.0 if never else max(real, -float(np.finfo(dtype).max)))
        if self.strictly_positive and not self.sigmoid and value <= 0:
            value = np.nextafter(dtype.type(0), dtype.type(1))  # smallest positive: "> 0" as ">="
        self._state = (value, never)

    def mask(self, raw: np.ndarray) -> np.ndarray:
        """Boolean mask of the entries of a raw array that reach the threshold."""
        threshold, never = self._state
        if never:
            return np.zeros(raw.shape, dtype=bool)
        return raw >= threshold

    def indices(self, raw: np.ndarray) -> np.ndarray:
        """Indices of the entries of a 1-D raw array that reach the threshold."""
        threshold, never = self._state
        if never:
            return np.empty(0, dtype=np.intp)
        return np.flatnonzero(raw >= threshold)


def describe(outputs: Sequence[TensorInfo]) -> str:
    """One line per output: name, shape, dtype and quantization, for error messages."""
    lines = []
    for i, o in enumerate(outputs):
        quant = f", quantized scale={o.scale:g} zero_point={o.zero_point}" if o.quantized else ""
        lines.append(f"  output {i} {o.name!r}: shape {list(o.shape)}, {np.dtype(o.dtype).name}{quant}")
    return "\n".join(lines)


def require_count(type_key: str, outputs: Sequence[TensorInfo], expected: int, what: str) -> None:
    """Raise DecoderError unless the model has exactly ``expected`` outputs."""
    if len(outputs) != expected:
        raise DecoderError(
            f"decoder {type_key!r} expects {expected} output(s) ({what}) but the model has {len(outputs)}:\n"
            f"{describe(outputs)}\nSet decoder.type in model.json to the model's real output format."
        )


def empty_output(with_boxes: bool = True) -> DecodedOutput:
    """A frame with no detections."""
    return DecodedOutput(
        boxes=np.empty((0, 4), dtype=np.float32) if with_boxes else None,
        scores=np.empty(0, dtype=np.float32),
        class_ids=np.empty(0, dtype=np.int64),
    )


def clip_unit(boxes: np.ndarray) -> np.ndarray:
    """Clip boxes to 0..1 in place (np.clip costs several microseconds on tiny arrays; this doesn't)."""
    np.maximum(boxes, 0.0, out=boxes)
    return np.minimum(boxes, 1.0, out=boxes)


def center_to_corners(centers: np.ndarray, width: float, height: float) -> np.ndarray:
    """(K, 4) cx, cy, w, h in units of ``width``/``height`` -> (K, 4) x1, y1, x2, y2 in 0..1, not clipped.

    NMS must see the boxes as the model drew them (Ultralytics suppresses before clipping: clipped boxes
    overlap more and lose neighbours the reference keeps); :func:`suppress` clips the survivors.
    """
    c = centers.astype(np.float32, copy=False)
    half = c[:, 2:4] * np.float32(0.5)
    out = np.empty((len(c), 4), dtype=np.float32)
    np.subtract(c[:, :2], half, out=out[:, :2])
    np.add(c[:, :2], half, out=out[:, 2:])
    out *= np.array([1.0 / width, 1.0 / height, 1.0 / width, 1.0 / height], dtype=np.float32)
    return out


def suppress(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, thresholds: Thresholds) -> DecodedOutput:
    """Class-aware NMS and the max_detections cap over already score-filtered candidates; survivors clipped to 0..1."""
    keep = nms(boxes, scores, class_ids, thresholds.iou, thresholds.max_detections)
    return DecodedOutput(
        boxes=clip_unit(boxes[keep].astype(np.float32)),  # a copy (fancy indexing), clipped in place
        scores=scores[keep].astype(np.float32, copy=False),
        class_ids=class_ids[keep].astype(np.int64, copy=False),
    )


def top_by_score(
    boxes: np.ndarray | None, scores: np.ndarray, class_ids: np.ndarray, max_detections: int
) -> DecodedOutput:
    """Sort descending by score (stable) and cap, for outputs whose NMS ran inside the graph."""
    order = np.argsort(-scores, kind="stable")[:max_detections]
    return DecodedOutput(
        boxes=None if boxes is None else boxes[order].astype(np.float32, copy=False),
        scores=scores[order].astype(np.float32, copy=False),
        class_ids=class_ids[order].astype(np.int64, copy=False),
    )
