"""SSD models ending in TFLite's ``TFLite_Detection_PostProcess`` op: NMS already ran in the graph.

The op emits boxes ``[1, N, 4]`` (ymin, xmin, ymax, xmax in 0..1), classes ``[1, N]``, scores
``[1, N]`` and a count ``[1]``, but converters reorder them (TF1 exports boxes, classes, scores,
count; TF2 exports often scores, boxes, count, classes, all named ``StatefulPartitionedCall:N``),
so outputs are mapped by shape and name, never by index. Boxes and count have unique shapes;
classes and scores share one, so names decide, and when names say nothing the values of the first
frame that can tell them apart do: class ids are integral, scores lie in 0..1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from agent.decoders._common import ScoreGate, clip_unit, dequantize, describe, empty_output, require_count, top_by_score
from agent.decoders.base import DecodedOutput, Decoder, TensorInfo
from agent.errors import DecoderError
from agent.manifest import SSDPostprocessDecoder, Thresholds

log = logging.getLogger(__name__)

_TF1_OP = "tflite_detection_postprocess"
_TF1_OUTPUT_ROLES = ("boxes", "classes", "scores", "count")  # fixed by the op's definition
_EXPECTED = "boxes [1, N, 4], classes [1, N], scores [1, N], count [1]"


def _role_from_name(name: str) -> str | None:
    """What a tensor's name says it is, or None (e.g. TF2's ``StatefulPartitionedCall:2``)."""
    low = name.lower()
    for role, words in (("boxes", ("box",)), ("scores", ("score",)), ("classes", ("class",)), ("count", ("num", "count"))):
        if any(w in low for w in words):
            return role
    base, _, suffix = low.partition(":")
    if base == _TF1_OP and (suffix == "" or (suffix.isdigit() and int(suffix) < 4)):
        return _TF1_OUTPUT_ROLES[int(suffix or 0)]
    return None


def _split_by_shape(outputs: Sequence[TensorInfo]) -> tuple[int, int, tuple[int, int]] | None:
    """(boxes, count, (vector, vector)) indices if the four shapes fit the op's outputs, else None."""
    if len(outputs) != 4:
        return None
    boxes = [i for i, o in enumerate(outputs) if len(o.shape) == 3 and o.shape[0] == 1 and o.shape[2] == 4]
    if len(boxes) != 1:
        return None
    n = outputs[boxes[0]].shape[1]
    rest = [i for i in range(4) if i != boxes[0]]
    counts = [i for i in rest if math.prod(outputs[i].shape) == 1 and len(outputs[i].shape) <= 1]
    if len(counts) != 1:  # N == 1 makes the vectors size 1 too; then a rank-2 [1, 1] count is ambiguous
        counts = [i for i in rest if math.prod(outputs[i].shape) == 1 and outputs[i].shape != (1, n)]
    if len(counts) != 1:
        return None
    vectors = [i for i in rest if i != counts[0]]
    if any(outputs[i].shape != (1, n) for i in vectors):
        return None
    return boxes[0], counts[0], (vectors[0], vectors[1])


class SSDPostprocess(Decoder):
    """Four post-processed outputs in any order; applies label_offset, score threshold and max_detections."""

    type_key = "ssd_postprocess"
    spec_model = SSDPostprocessDecoder

    def _bind(self) -> None:
        spec, thresholds = self.spec, self.thresholds
        require_count(self.type_key, self.outputs, 4, _EXPECTED)
        split = _split_by_shape(self.outputs)
        if split is None:
            raise DecoderError(
                f"decoder 'ssd_postprocess' expects 4 outputs shaped {_EXPECTED} (any order), got:\n"
                f"{describe(self.outputs)}\nSet decoder.type in model.json to the model's real output format."
            )
        self._boxes, self._count, pair = split
        self._pair = pair
        self._label_offset = int(getattr(spec, "label_offset", 0))
        # A gate for each candidate scores tensor, so set_thresholds never races the assignment.
        self._gates = {i: ScoreGate(self.outputs[i]) for i in pair}
        for gate in self._gates.values():
            gate.update(thresholds.score)
        self._roles: tuple[int, int] | None = None  # (classes, scores) once known
        names = {i: _role_from_name(self.outputs[i].name) for i in pair}
        a, b = pair
        if names[a] == "classes" or names[b] == "scores":
            self._assign(classes=a, scores=b, why="by name")
        elif names[a] == "scores" or names[b] == "classes":
            self._assign(classes=b, scores=a, why="by name")
        # else: decided on the first frame whose values tell them apart (see _resolve).

    def _assign(self, classes: int, scores: int, why: str) -> tuple[int, int]:
        self._roles = (classes, scores)
        log.info(
            "ssd_postprocess: classes are %r, scores are %r (%s)", self.outputs[classes].name, self.outputs[scores].name, why
        )
        return self._roles

    def set_thresholds(self, thresholds: Thresholds) -> None:
        super().set_thresholds(thresholds)
        for gate in self._gates.values():
            gate.update(thresholds.score)

    def _resolve(self, outputs: Sequence[np.ndarray], count: int) -> tuple[int, int]:
        """Which of the two [1, N] outputs holds classes; remembered once the values are decisive."""
        a, b = self._pair
        va = dequantize(outputs[a].reshape(-1)[:count], self.outputs[a])
        vb = dequantize(outputs[b].reshape(-1)[:count], self.outputs[b])

        def can_be_classes(v: np.ndarray) -> bool:
            return bool(np.all(v == np.round(v)) and np.all(v >= 0))

        def can_be_scores(v: np.ndarray) -> bool:
            return bool(np.all((v >= 0) & (v <= 1)))

        a_classes = can_be_classes(va) and can_be_scores(vb)
        b_classes = can_be_classes(vb) and can_be_scores(va)
        if a_classes and not b_classes:
            return self._assign(classes=a, scores=b, why="by values")
        if b_classes and not a_classes:
            return self._assign(classes=b, scores=a, why="by values")
        if not (a_classes or b_classes):
            raise DecoderError(
                f"decoder 'ssd_postprocess': neither {self.outputs[a].name!r} nor {self.outputs[b].name!r} "
                f"(shape {list(self.outputs[a].shape)}) holds integral class ids beside 0..1 scores.\n"
                f"{describe(self.outputs)}\nSet decoder.type in model.json to the model's real output format."
            )
        return a, b  # every value is 0 or 1 so far: undecided, try again next frame

    def decode(self, outputs: Sequence[np.ndarray]) -> DecodedOutput:
        boxes_raw = outputs[self._boxes][0]
        count_value = float(dequantize(outputs[self._count].reshape(-1)[:1], self.outputs[self._count])[0])
        count = min(max(int(count_value), 0), boxes_raw.shape[0]) if math.isfinite(count_value) else 0
        if count == 0:
            return empty_output()
        classes, scores = self._roles or self._resolve(outputs, count)
        idx = self._gates[scores].indices(outputs[scores].reshape(-1)[:count])
        if idx.size == 0:
            return empty_output()
        score_values = dequantize(outputs[scores].reshape(-1)[idx], self.outputs[scores])
        class_ids = np.rint(dequantize(outputs[classes].reshape(-1)[idx], self.outputs[classes])).astype(np.int64)
        class_ids += self._label_offset
        yxyx = dequantize(boxes_raw[idx], self.outputs[self._boxes])
        boxes = clip_unit(yxyx[:, [1, 0, 3, 2]])
        return top_by_score(boxes, score_values, class_ids, self.thresholds.max_detections)

    @classmethod
    def guess(cls, outputs: Sequence[TensorInfo], num_classes: int | None) -> BaseModel | None:
        """Four outputs shaped like the post-process op's (boxes [1, N, 4], two [1, N], a count)."""
        return SSDPostprocessDecoder() if _split_by_shape(outputs) is not None else None
