"""Capture -> newest-frame slot -> inference loop -> sinks.

One inference thread (the caller's) drives the detector. For every frame it times each
stage, writes the frame straight into the model's input memory, releases the frame (a
camera buffer goes back to the camera right after the tensor write), invokes, decodes and
hands exactly one :class:`DetectionResult` to every sink. Frames may be dropped at the
slot when inference is slower than the camera (counted); results are never dropped
silently: a failing sink is logged and counted.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.backends.base import Backend
from agent.detector import Detector
from agent.errors import SourceEnded
from agent.handoff import InvokeHandoff
from agent.preprocess import Letterbox, to_bgr
from agent.schema import DetectionResult, StageTimings
from agent.sinks.base import Sink
from agent.sources.base import FrameFeed, FrameSource, make_feed
from agent.stats import LatencyHistogram, RateMeter

log = logging.getLogger(__name__)

# overhead: everything a frame costs outside the model itself (preprocess, decode, sinks)
STAGES = ("wait", "preprocess", "invoke", "decode", "sink", "overhead", "capture_to_result")


@dataclass
class PipelineStats:
    """Live counters, read by the console view and telemetry while the pipeline runs."""

    source: FrameSource
    frames: int = 0
    detections: int = 0
    sink_errors: int = 0
    started_monotonic: float = field(default_factory=time.monotonic)
    latency: dict[str, LatencyHistogram] = field(default_factory=lambda: {s: LatencyHistogram() for s in STAGES})
    inference_rate: RateMeter = field(default_factory=RateMeter)

    def snapshot(self) -> dict[str, Any]:
        src = self.source.stats
        return {
            "frames": self.frames,
            "detections": self.detections,
            "frames_captured": src.frames_captured,
            "frames_dropped": src.frames_dropped,
            "source_connected": src.connected,
            "source_reconnects": src.reconnects,
            "sink_errors": self.sink_errors,
            "inference_fps": self.inference_rate.rate(),
            "uptime_s": time.monotonic() - self.started_monotonic,
            "latency_ms": {name: hist.summary() for name, hist in self.latency.items()},
        }


GIL_SWITCH_INTERVAL_S = 0.0005
FrameHook = Callable[[DetectionResult], None]
SnapshotCallback = Callable[[np.ndarray, DetectionResult], None]


@dataclass(slots=True)
class _InFlight:
    """A frame whose pixels are in a context's input memory, on its way to a result."""

    frame_id: int
    source_id: str
    capture_monotonic_ns: int
    capture_wall_time: float
    width: int
    height: int
    geo: Letterbox
    wait_ms: float
    preprocess_ms: float
    invoke_ms: float = 0.0
    snapshot: np.ndarray | None = None  # a BGR copy of the frame, only when one was requested


class Pipeline:
    """Runs a detector over a source until stopped, the source ends, or a limit is reached.

    With ``overlap`` (the default when the machine has a core to spare) two execution
    contexts alternate: while one invokes frame N, a worker thread decodes frame N-1 from
    the other and preprocesses frame N+1 into it, so the model never waits for Python.
    The runtime releases the GIL during invoke, which is what makes this pay.
    """

    def __init__(
        self,
        detector: Detector,
        source: FrameSource,
        sinks: Sequence[Sink],
        *,
        max_frames: int | None = None,
        duration_s: float | None = None,
        frame_timeout_s: float = 0.5,
        overlap: bool | None = None,
    ) -> None:
        self.detector = detector
        self.source = source
        self.sinks = list(sinks)
        self.max_frames = max_frames
        self.duration_s = duration_s
        self.frame_timeout_s = frame_timeout_s
        self.overlap = (os.cpu_count() or 1) > 1 if overlap is None else overlap
        self.stats = PipelineStats(source)
        self.frame_hooks: list[FrameHook] = []
        self._stop = threading.Event()
        self._pending_detector: Detector | None = None
        self._swap_lock = threading.Lock()
        self._feed: FrameFeed | None = None
        self._deadline: float | None = None
        self._fetched = 0
        self._ended = False
        self._snapshot_requests: list[SnapshotCallback] = []
        self._snapshot_lock = threading.Lock()
        self._fallback: Detector | None = None
        self.model_failure: BaseException | None = None

    # ---- control (any thread) ------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the frames in flight, flush the sinks, return from ``run``."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def swap_detector(self, detector: Detector) -> None:
        """Use ``detector`` from the next frame on; frames in flight finish on the old one."""
        with self._swap_lock:
            self._pending_detector = detector

    @property
    def swap_pending(self) -> bool:
        """A detector handed to ``swap_detector`` has not taken over yet."""
        return self._pending_detector is not None

    def arm_fallback(self, detector: Detector | None) -> None:
        """While armed, a frame that fails on the running model switches back to ``detector``
        (recorded in ``model_failure``) instead of stopping the pipeline: a model on trial
        must not take the agent down with it. ``None`` disarms."""
        with self._swap_lock:
            self._fallback = detector
            if detector is not None:
                self.model_failure = None

    def _fall_back(self, exc: BaseException) -> bool:
        """After a failed frame: go back to the armed fallback model; False when there is none."""
        with self._swap_lock:
            fallback = self._fallback
            if fallback is None or fallback is self.detector or not isinstance(exc, Exception):
                return False
            failed, self.detector = self.detector, fallback
            self._fallback = self._pending_detector = None
            self.model_failure = exc
        log.error(
            "model %s %s failed on a frame (%s: %s); back to %s %s",
            failed.ref.name,
            failed.ref.version,
            type(exc).__name__,
            exc,
            fallback.ref.name,
            fallback.ref.version,
        )
        self.emit_event(
            "model_failed", {"name": failed.ref.name, "version": failed.ref.version, "error": f"{type(exc).__name__}: {exc}"}
        )
        self.emit_event("model_changed", {"name": fallback.ref.name, "version": fallback.ref.version})
        return True

    def request_snapshot(self, callback: SnapshotCallback) -> None:
        """Call ``callback(bgr_image, result)`` with the next frame and its result (any thread).

        Only then is a frame copied: the hot path never keeps frames otherwise.
        """
        with self._snapshot_lock:
            self._snapshot_requests.append(callback)

    def emit_event(self, kind: str, data: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.event(kind, data)
            except Exception as exc:  # noqa: BLE001 - a sink failure must not stop inference
                self.stats.sink_errors += 1
                log.error("sink %s failed on event %s: %s", sink.type_key, kind, exc)

    # ---- the loop (the calling thread) --------------------------------------------
    def run(self) -> PipelineStats:
        m = self.detector.manifest.input
        self.source.prepare(m.width, m.height)
        self._feed = make_feed(self.source, on_event=self.emit_event)
        self._feed.start()
        for sink in self.sinks:
            sink.start(self)
        self._deadline = None if self.duration_s is None else time.monotonic() + self.duration_s
        switch_interval = sys.getswitchinterval()
        try:
            if self.overlap and self.detector.backend.delegate_in_use is None:
                # The fill/decode threads hold the GIL while invoke runs; when invoke returns,
                # the inference thread should get it back within 0.5 ms, not CPython's default 5.
                sys.setswitchinterval(min(switch_interval, GIL_SWITCH_INTERVAL_S))
                self._run_overlapped()
            else:
                self._run_sequential()
        finally:
            sys.setswitchinterval(switch_interval)
            self._shutdown()
        return self.stats

    def _want_more(self) -> bool:
        if self._stop.is_set() or self._ended:
            return False
        if self.max_frames is not None and self._fetched >= self.max_frames:
            return False
        return self._deadline is None or time.monotonic() < self._deadline

    def _take_swap(self) -> bool:
        if self._pending_detector is None:
            return False
        with self._swap_lock:
            self.detector, self._pending_detector = self._pending_detector, None
        self.emit_event("model_changed", {"name": self.detector.ref.name, "version": self.detector.ref.version})
        return True

    def _run_sequential(self) -> None:
        while self._want_more():
            self._take_swap()
            detector = self.detector
            ctx = detector.backend
            try:
                job = self._fetch(detector, ctx)
                if job is not None:
                    self._invoke(detector, ctx, job)
                    self._finish(detector, ctx, job)
            except Exception as exc:
                if not self._fall_back(exc):
                    raise

    def _run_overlapped(self) -> None:
        """Three stages on three threads, linked by queues, with two execution contexts.

        filler: wait for a frame, preprocess it into a free context -> ``ready``
        this thread: invoke the ready context (GIL released) -> ``invoked``
        decoder: decode, build the result, run the sinks -> the context is free again

        A frame's result is decoded as soon as its invoke ends (no waiting for the next
        frame; for a fast model, within the decoder's nap overshoot, see
        :mod:`agent.handoff`), results leave in frame order (one decoder), and at most two
        frames are in flight. A detector swap drains both contexts, then starts over with the new one.
        """
        while True:
            try:
                self._run_epoch(self.detector)
            except Exception as exc:
                if not self._fall_back(exc):
                    raise
                continue
            if self._pending_detector is None or not self._want_more():
                return
            self._take_swap()

    def _run_epoch(self, detector: Detector) -> None:
        free: queue.SimpleQueue[Backend] = queue.SimpleQueue()
        ready: queue.SimpleQueue[tuple[Backend, _InFlight] | BaseException | None] = queue.SimpleQueue()
        invoked: InvokeHandoff[tuple[Backend, _InFlight]] = InvokeHandoff()
        for ctx in detector.contexts(2):
            free.put(ctx)
        failures: list[BaseException] = []
        epoch_over = threading.Event()

        def filling() -> bool:
            return not epoch_over.is_set() and self._pending_detector is None and self._want_more()

        def fill() -> None:
            try:
                while filling():
                    try:
                        ctx = free.get(timeout=self.frame_timeout_s)
                    except queue.Empty:
                        continue
                    job = None
                    while job is None and filling():
                        job = self._fetch(detector, ctx)
                    if job is None:
                        break
                    ready.put((ctx, job))
                ready.put(None)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the inference thread
                ready.put(exc)

        def decode() -> None:
            while (item := invoked.get()) is not None:
                ctx, job = item
                try:
                    self._finish(detector, ctx, job)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the inference thread
                    failures.append(exc)
                    epoch_over.set()  # the filler stops, the inference loop ends and raises it
                free.put(ctx)

        filler = threading.Thread(target=fill, name="pipeline-fill", daemon=True)
        decoder = threading.Thread(target=decode, name="pipeline-decode", daemon=True)
        filler.start()
        decoder.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                ctx, job = item
                invoked.invoking()
                self._invoke(detector, ctx, job)
                invoked.put((ctx, job))
        finally:
            epoch_over.set()
            invoked.close()
            decoder.join()
            filler.join()
        if failures:
            raise failures[0]

    # ---- stages ----------------------------------------------------------------------
    def _fetch(self, detector: Detector, ctx: Backend) -> _InFlight | None:
        assert self._feed is not None
        clock = time.perf_counter_ns
        t0 = clock()
        try:
            frame = self._feed.next_frame(self.frame_timeout_s)
        except SourceEnded:
            log.info("source %s ended after %d frames", self.source.config.id, self._fetched)
            self._ended = True
            return None
        if frame is None:
            return None
        t1 = clock()
        snapshot = to_bgr(frame.image, frame.pixel_format) if self._snapshot_requests else None
        try:
            geo = detector.preprocess(frame.image, frame.pixel_format, frame.width, frame.height, ctx)
        finally:
            frame.release()  # the camera gets its buffer back as soon as the tensor holds the pixels
        t2 = clock()
        self._fetched += 1
        return _InFlight(
            frame.frame_id,
            frame.source_id,
            frame.capture_monotonic_ns,
            frame.capture_wall_time,
            frame.width,
            frame.height,
            geo,
            (t1 - t0) / 1e6,
            (t2 - t1) / 1e6,
            snapshot=snapshot,
        )

    @staticmethod
    def _invoke(detector: Detector, ctx: Backend, job: _InFlight) -> None:
        t0 = time.perf_counter_ns()
        detector.invoke(ctx)
        job.invoke_ms = (time.perf_counter_ns() - t0) / 1e6

    def _finish(self, detector: Detector, ctx: Backend, job: _InFlight) -> None:
        clock = time.perf_counter_ns
        t0 = clock()
        detections = detector.decode(job.geo, ctx)
        t1 = clock()
        timings = StageTimings.model_construct(
            wait_ms=job.wait_ms,
            preprocess_ms=job.preprocess_ms,
            invoke_ms=job.invoke_ms,
            decode_ms=(t1 - t0) / 1e6,
            capture_to_result_ms=(time.monotonic_ns() - job.capture_monotonic_ns) / 1e6,
        )
        result = DetectionResult.model_construct(
            schema_version=1,
            frame_id=job.frame_id,
            source_id=job.source_id,
            capture_monotonic_ns=job.capture_monotonic_ns,
            capture_time=job.capture_wall_time,
            frame_width=job.width,
            frame_height=job.height,
            model=detector.ref,
            task=detector.task.value,
            detections=detections,
            timings=timings,
        )
        for sink in self.sinks:
            try:
                sink.emit(result)
            except Exception as exc:  # noqa: BLE001 - counted and logged; the next sink still gets it
                self.stats.sink_errors += 1
                log.error("sink %s failed on frame %d: %s", sink.type_key, job.frame_id, exc)
        sink_ms = (clock() - t1) / 1e6
        self._record(timings, sink_ms, len(detections))
        for hook in self.frame_hooks:
            hook(result)
        if job.snapshot is not None:
            self._deliver_snapshot(job.snapshot, result)

    def _deliver_snapshot(self, image: np.ndarray, result: DetectionResult) -> None:
        with self._snapshot_lock:
            callbacks, self._snapshot_requests = self._snapshot_requests, []
        for callback in callbacks:
            try:
                callback(image, result)
            except Exception as exc:  # noqa: BLE001 - a snapshot consumer must not stop inference
                log.error("snapshot callback failed: %s", exc)

    def _record(self, t: StageTimings, sink_ms: float, n_detections: int) -> None:
        lat = self.stats.latency
        lat["wait"].record(t.wait_ms)
        lat["preprocess"].record(t.preprocess_ms)
        lat["invoke"].record(t.invoke_ms)
        lat["decode"].record(t.decode_ms)
        lat["sink"].record(sink_ms)
        lat["overhead"].record(t.preprocess_ms + t.decode_ms + sink_ms)
        lat["capture_to_result"].record(t.capture_to_result_ms)
        self.stats.frames += 1
        self.stats.detections += n_detections
        self.stats.inference_rate.tick()

    def _shutdown(self) -> None:
        if self._feed is not None:
            self._feed.stop()
        for sink in self.sinks:
            for step in (sink.flush, sink.close):
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - shut down every sink even if one fails
                    self.stats.sink_errors += 1
                    log.error("sink %s failed to %s: %s", sink.type_key, step.__name__, exc)
