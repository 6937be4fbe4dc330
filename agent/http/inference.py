"""On-demand detection beside the camera pipeline, without touching its state.

The pipeline owns the detector's first two execution contexts, its preprocessor (scratch
buffers sized to the camera frame) and its decoder (YOLO and anchor decoders reuse scratch
arrays, so ``decode`` is not re-entrant). A request therefore runs in a lane of its own:
a forked execution context (own input/output memory), its own :class:`Preprocessor` and
its own decoder instance built from the same manifest — nothing is shared with the
pipeline's threads but the read-only model, and one lock serializes requests. The
pipeline never waits on that lock, so its timing is disturbed only by CPU contention.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from agent.decoders import build_decoder
from agent.preprocess import Preprocessor
from agent.schema import DetectionResult, still_image_result
from agent.sources.base import PixelFormat

if TYPE_CHECKING:
    from agent.backends.base import Backend
    from agent.decoders.base import Decoder
    from agent.detector import Detector
    from agent.pipeline import Pipeline

UPLOAD_SOURCE_ID = "http-upload"


class _Lane:
    """Context, preprocessor and decoder of one detector, private to the HTTP API."""

    def __init__(self, detector: Detector) -> None:
        m = detector.manifest
        self.detector = detector
        # our own fork rather than detector.contexts(3): contexts() appends to a list the
        # pipeline reads at every epoch, so calling it from this thread after a swap would race
        self.ctx: Backend = detector.backend.fork()
        self.preprocessor = Preprocessor(m.input, self.ctx.input)
        self.decoder: Decoder = build_decoder(
            m.decoder, self.ctx.outputs, (m.input.width, m.input.height), len(m.labels), m.thresholds
        )

    def close(self) -> None:
        self.ctx.close()


class DetectLane:
    """Runs uploads through the pipeline's current model; follows detector swaps and threshold changes."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._lock = threading.Lock()
        self._lane = _Lane(pipeline.detector)  # forked at startup, before the first request waits for it
        self._next_id = 0

    def detect(self, image: np.ndarray) -> DetectionResult:
        """One BGR image -> the standard result (``source_id`` ``http-upload``, ``frame_id`` counting requests)."""
        with self._lock:
            lane = self._current()
            detector = lane.detector
            lane.decoder.set_thresholds(detector.decoder.thresholds)  # remote threshold changes apply here too
            height, width = image.shape[:2]
            clock = time.perf_counter_ns
            captured_ns, captured_wall = time.monotonic_ns(), time.time()
            t0 = clock()
            geo = lane.preprocessor.write(image, PixelFormat.BGR, width, height, lane.ctx.input_array())
            t1 = clock()
            lane.ctx.invoke()
            t2 = clock()
            detections = detector.to_detections(lane.decoder.decode(lane.ctx.output_arrays()), geo)
            t3 = clock()
            self._next_id += 1
            return still_image_result(
                frame_id=self._next_id,
                source_id=UPLOAD_SOURCE_ID,
                image_size=(width, height),
                model=detector.ref,
                task=detector.task.value,
                detections=detections,
                captured=(captured_ns, captured_wall),
                stage_ns=(t0, t1, t2, t3),
            )

    def _current(self) -> _Lane:
        detector = self._pipeline.detector
        if detector is not self._lane.detector:  # the model was swapped (OTA, reload): follow it
            old, self._lane = self._lane, _Lane(detector)
            old.close()
        return self._lane

    def close(self) -> None:
        with self._lock:
            self._lane.close()
