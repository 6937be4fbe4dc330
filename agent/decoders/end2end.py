"""End-to-end detectors with NMS inside the graph: ``[1, N, 6]`` rows of x1, y1, x2, y2, score, class.

RT-DETR exports write cx, cy, w, h instead (``box_format: cxcywh``); they are turned into corners here.

YOLOv10, YOLO-NAS, RT-DETR-style and ``nms=True`` exports pad the N rows; padding rows carry a
score <= 0 or a class < 0 and are dropped. No NMS here, only the threshold and the cap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from agent.decoders._common import ScoreGate, clip_unit, dequantize, describe, empty_output, require_count, top_by_score
from agent.decoders.base import DecodedOutput, Decoder, TensorInfo
from agent.errors import DecoderError
from agent.manifest import End2EndDecoder, Thresholds

# More rows than this and a [1, N, 6] output is a raw YOLOv5 head with one class, not a padded NMS result.
MAX_END2END_ROWS = 1000


class End2End(Decoder):
    """Padded, already-suppressed detections; boxes in input pixels unless ``boxes_normalized``."""

    type_key = "end2end"
    spec_model = End2EndDecoder

    def _bind(self) -> None:
        spec, thresholds = self.spec, self.thresholds
        require_count(self.type_key, self.outputs, 1, "[1, N, 6] rows of x1, y1, x2, y2, score, class")
        info = self.outputs[0]
        if len(info.shape) != 3 or info.shape[0] != 1 or info.shape[2] != 6:
            raise DecoderError(
                f"decoder 'end2end': output {info.name!r} has shape {list(info.shape)}, expected [1, N, 6] "
                f"(x1, y1, x2, y2, score, class).\n{describe(self.outputs)}\n"
                "Set decoder.type in model.json to the model's real output format."
            )
        self._info = info
        self._gate = ScoreGate(info, strictly_positive=True)  # score 0 marks a padding row, even at threshold 0
        self._gate.update(thresholds.score)
        normalized = getattr(spec, "boxes_normalized", False)
        w, h = (1.0, 1.0) if normalized else (float(self.input_width), float(self.input_height))
        self._box_scale = np.array([1.0 / w, 1.0 / h, 1.0 / w, 1.0 / h], dtype=np.float32)
        self._centre_size = getattr(spec, "box_format", "xyxy") == "cxcywh"

    def set_thresholds(self, thresholds: Thresholds) -> None:
        super().set_thresholds(thresholds)
        self._gate.update(thresholds.score)

    def decode(self, outputs: Sequence[np.ndarray]) -> DecodedOutput:
        raw = outputs[0][0]
        idx = self._gate.indices(raw[:, 4])
        if idx.size == 0:
            return empty_output()
        rows = dequantize(raw[idx], self._info)  # survivors only
        class_ids = np.rint(rows[:, 5]).astype(np.int64)
        valid = class_ids >= 0
        if not valid.all():
            rows, class_ids = rows[valid], class_ids[valid]
        boxes = rows[:, :4] * self._box_scale
        if self._centre_size:  # survivors only: cx, cy, w, h -> x1, y1, x2, y2
            half = boxes[:, 2:] * 0.5
            boxes = np.concatenate((boxes[:, :2] - half, boxes[:, :2] + half), axis=1)
        boxes = clip_unit(boxes)
        return top_by_score(boxes, rows[:, 4], class_ids, self.thresholds.max_detections)

    @classmethod
    def guess(cls, outputs: Sequence[TensorInfo], num_classes: int | None) -> BaseModel | None:
        """A single ``[1, N, 6]`` output with N <= 1000 (more rows means a raw one-class YOLOv5 head).

        The guessed spec assumes boxes in input pixels; a manifest must say ``boxes_normalized``
        for exports that emit 0..1 boxes.
        """
        if len(outputs) != 1:
            return None
        shape = outputs[0].shape
        if len(shape) == 3 and shape[0] == 1 and shape[2] == 6 and 0 < shape[1] <= MAX_END2END_ROWS:
            return End2EndDecoder()
        return None
