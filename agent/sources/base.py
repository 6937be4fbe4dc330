"""What every frame source provides, and the machinery live sources share.

A source yields :class:`Frame` objects. A frame's ``image`` may be a view into memory the
source owns (a camera DMA buffer, a recycled pool buffer): it is valid until
``frame.release()``, which the pipeline calls right after the pixels were written into the
model's input tensor.

Live sources (cameras, streams) run a reader thread that keeps only the newest frame in a
:class:`LatestFrameSlot`; older unconsumed frames are dropped and counted. Finite sources
(image folders, files read as fast as possible) are pulled frame by frame, nothing dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.errors import SourceEnded

log = logging.getLogger(__name__)


class PixelFormat(StrEnum):
    BGR = "BGR"  # H x W x 3, OpenCV's native order
    RGB = "RGB"  # H x W x 3
    GRAY = "GRAY"  # H x W
    YUV420 = "YUV420"  # I420 planar, (H * 3/2) x W


@dataclass(slots=True)
class Frame:
    image: np.ndarray
    pixel_format: PixelFormat
    frame_id: int
    source_id: str
    capture_monotonic_ns: int
    capture_wall_time: float
    width: int
    height: int
    ground_truth: list[Any] | None = None
    _release: Callable[[], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the frame's memory back to its source. Idempotent."""
        release, self._release = self._release, None
        if release is not None:
            release()


class SourceConfigBase(BaseModel):
    """Fields every source shares; each plugin subclasses it with ``type: Literal[...]``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field("cam0", description="Source id carried in every result.", pattern=r"^[A-Za-z0-9_.-]+$")


@dataclass(slots=True)
class SourceStats:
    frames_captured: int = 0
    frames_dropped: int = 0  # frames inference never saw: replaced in the newest-frame slot, or ticks lost
    frames_skipped: int = 0  # unreadable inputs passed over (corrupt image files)
    reconnects: int = 0
    connected: bool = False
    last_error: str | None = None


class FrameSource(ABC):
    """A plugin: one subclass per file in ``agent/sources/``.

    Subclasses set ``type_key`` and ``config_model`` and implement ``open``, ``read`` and
    ``close``. Whether a source is live (frames arrive on their own clock and may be
    dropped) is per instance: a paced video file is live, the same file read as fast as
    possible is not. The pipeline wraps live sources in a :class:`LiveReader`.
    """

    type_key: ClassVar[str]
    config_model: ClassVar[type[SourceConfigBase]]

    def __init__(self, config: SourceConfigBase) -> None:
        self.config = config
        self.stats = SourceStats()
        self._frame_counter = 0

    @property
    def live(self) -> bool:
        """True when frames come on the source's own clock (cameras, streams, paced files)."""
        return False

    def prepare(self, model_width: int, model_height: int) -> None:  # noqa: B027 - optional hook
        """Told the model's input size before ``open`` (picamera2 sizes its lores stream to it)."""

    @abstractmethod
    def open(self) -> None:
        """Acquire the device/file. Raise :class:`SourceError` with a clear message on failure."""

    @abstractmethod
    def read(self) -> Frame:
        """Block until the next frame; raise :class:`SourceEnded` when a finite source is done.

        Raise any other exception when a live device went away: the reader reconnects.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the device/file. Must be safe to call more than once."""

    def next_frame_id(self) -> int:
        self._frame_counter += 1
        return self._frame_counter


class LatestFrameSlot:
    """Holds only the newest frame: a put replaces (and releases) an unconsumed older one."""

    def __init__(self, on_drop: Callable[[], None] | None = None) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed: BaseException | None = None
        self._on_drop = on_drop

    def put(self, frame: Frame) -> None:
        with self._cond:
            stale, self._frame = self._frame, frame
            self._cond.notify()
        if stale is not None:
            stale.release()
            if self._on_drop is not None:
                self._on_drop()

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, waiting up to ``timeout`` s; None on timeout."""
        with self._cond:
            if self._frame is None and self._closed is None:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            if frame is None and self._closed is not None:
                raise self._closed
            return frame

    def close(self, reason: BaseException) -> None:
        """Wake the consumer; after the last frame, ``take`` raises ``reason``."""
        with self._cond:
            self._closed = reason
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            stale, self._frame = self._frame, None
        if stale is not None:
            stale.release()


class Backoff:
    """Exponential back-off with a ceiling; ``reset()`` after a success."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class FrameFeed(ABC):
    """How the pipeline gets frames from a source, live or pulled."""

    source: FrameSource

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def next_frame(self, timeout: float | None = None) -> Frame | None:
        """The next frame to infer on, None on timeout; raises SourceEnded at the end."""

    @abstractmethod
    def stop(self) -> None: ...


class PulledFeed(FrameFeed):
    """A finite source read in the inference loop: every frame is processed, none dropped."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source

    def start(self) -> None:
        self.source.open()
        self.source.stats.connected = True

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        frame = self.source.read()
        self.source.stats.frames_captured += 1
        return frame

    def stop(self) -> None:
        self.source.close()
        self.source.stats.connected = False


class LiveReader(FrameFeed):
    """Reads a live source on its own thread into a :class:`LatestFrameSlot`, reconnecting on loss.

    The reader never lets a camera failure escape: it logs, counts, reports through
    ``on_event`` and retries with exponential back-off until ``stop()``.
    """

    def __init__(
        self,
        source: FrameSource,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.source = source
        self.stats = source.stats
        self._slot = LatestFrameSlot(on_drop=self._count_drop)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_event = on_event or (lambda kind, data: None)
        self._backoff = backoff or Backoff()

    def _count_drop(self) -> None:
        self.stats.frames_dropped += 1

    def start(self) -> None:
        self.source.open()  # the first open fails loudly: a wrong device path is a config error
        self.stats.connected = True
        self._thread = threading.Thread(target=self._reader, name=f"source-{self.source.config.id}", daemon=True)
        self._thread.start()

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        return self._slot.take(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._slot.clear()
        self._safe_close()
        self.stats.connected = False

    def _reader(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except SourceEnded as end:
                self._slot.close(end)
                return
            except Exception as exc:  # noqa: BLE001 - any failure of the device means "reconnect"
                self._handle_loss(exc)
                continue
            self.stats.frames_captured += 1
            self._slot.put(frame)

    def _handle_loss(self, exc: BaseException) -> None:
        source_id = self.source.config.id
        self.stats.connected = False
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("source %s lost: %s; reconnecting", source_id, self.stats.last_error)
        self._on_event("camera_lost", {"source": source_id, "error": self.stats.last_error})
        self._safe_close()
        while not self._stop.is_set():
            delay = self._backoff.next_delay()
            if self._stop.wait(delay):
                return
            try:
                self.source.open()
            except Exception as err:  # noqa: BLE001
                self.stats.last_error = f"{type(err).__name__}: {err}"
                log.info("source %s still unavailable (%s); next try in %.1fs", source_id, err, delay)
                continue
            self._backoff.reset()
            self.stats.reconnects += 1
            self.stats.connected = True
            log.warning("source %s back after reconnect #%d", source_id, self.stats.reconnects)
            self._on_event("camera_back", {"source": source_id, "reconnects": self.stats.reconnects})
            return

    def _safe_close(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # noqa: BLE001 - closing a dead device may fail; we reopen anyway
            log.debug("closing %s failed: %s", self.source.config.id, exc)


def make_feed(
    source: FrameSource,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    backoff: Backoff | None = None,
) -> FrameFeed:
    return LiveReader(source, on_event, backoff) if source.live else PulledFeed(source)


class DeadlinePacer:
    """Releases ticks on a fixed-rate schedule anchored to the monotonic clock.

    Deadlines are ``start + k * period``, never ``last wake-up + period``, so time spent
    between ticks (rendering, decoding, a slow consumer) does not accumulate as drift. A
    caller more than one whole period late skips the missed ticks (like a camera, it does
    not burst to catch up) and learns how many it skipped.
    """

    def __init__(self, fps: float) -> None:
        self.period_ns = round(1e9 / fps) if fps > 0 else 0
        self._next_ns: int | None = None

    def reset(self) -> None:
        """Start a new schedule at the next ``wait``."""
        self._next_ns = None

    def wait(self) -> int:
        """Sleep until the next tick; return how many ticks were missed (0 when on time)."""
        if not self.period_ns:
            return 0
        now = time.monotonic_ns()
        if self._next_ns is None:
            self._next_ns = now
        missed = 0
        if now >= self._next_ns + self.period_ns:
            missed = (now - self._next_ns) // self.period_ns
            self._next_ns += missed * self.period_ns  # keep the phase, drop whole periods
        elif now < self._next_ns:
            time.sleep((self._next_ns - now) / 1e9)
        self._next_ns += self.period_ns
        return missed


def now_stamps() -> tuple[int, float]:
    """Capture stamps: (monotonic ns, wall-clock seconds)."""
    return time.monotonic_ns(), time.time()


class FramePool:
    """A few preallocated frame buffers recycled between a producer and the pipeline.

    Lets a live source fill frames without allocating a frame-sized array per frame:
    ``acquire()`` hands out a free buffer (or None when all are in flight), and the frame's
    ``release`` puts it back.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type = np.uint8, count: int = 4) -> None:
        self._free = [np.empty(shape, dtype) for _ in range(count)]
        self._lock = threading.Lock()

    def acquire(self) -> np.ndarray | None:
        with self._lock:
            return self._free.pop() if self._free else None

    def release_fn(self, buf: np.ndarray) -> Callable[[], None]:
        def _give_back() -> None:
            with self._lock:
                self._free.append(buf)

        return _give_back
