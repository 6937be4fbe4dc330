"""The ``picamera2`` source: a Raspberry Pi CSI camera through libcamera, zero-copy.

The ISP does the resize: besides the ``main`` stream (its size picks the sensor mode and so
the field of view; we never read it) the camera produces a ``lores`` stream at the model's
input size, told by :meth:`prepare`. lores format: ``YUV420`` on a Pi 4 and older (the VC4
ISP only allows YUV on lores) and ``RGB888`` on a Pi 5 (PiSP allows RGB, saving a colour
conversion), detected from ``Picamera2.platform`` as picamera2's own examples do.
picamera2's ``RGB888`` is B,G,R in memory (the name describes the word, not the bytes), so
those frames are :attr:`PixelFormat.BGR`.

Zero copy: each frame holds its ``CompletedRequest`` (from ``capture_request()``); its
``image`` is a ``MappedArray`` view of the lores DMA buffer. ``frame.release()`` closes the
mapping and releases the request, so the buffer goes back to the camera right after the
pipeline wrote the tensor, or when a newer frame replaces it in the newest-frame slot.
``queue=False``: picamera2 keeps no completed request of its own, so with ``buffer_count`` 4
the camera still has a buffer while one frame waits in the slot and one is in inference.

YUV420 with a stride wider than the width (libcamera pads rows to the ISP's alignment) can't
be shown as a compact I420 array, so those frames are repacked into a recycled buffer (one
small copy) and the request is released at once; a model width that is a multiple of 64
(Pi 4) / 128 (Pi 5), or ``lores_alignment: optimal``, avoids it. RGB888 padding is fine: the
view is simply strided.

Capture time: ``SensorTimestamp`` (ns) from the request metadata. libcamera defines it on
CLOCK_BOOTTIME; we convert with the current CLOCK_BOOTTIME − CLOCK_MONOTONIC offset (zero
unless the system has suspended, which a Pi does not; picamera2's own examples compare it
with ``time.monotonic_ns()``), and derive the wall time from the frame's age. A stamp that is
missing or implausible (older than 10 s, e.g. from another clock) falls back to "now".
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydantic import Field

from agent.errors import SourceError
from agent.sources.base import Frame, FramePool, FrameSource, PixelFormat, SourceConfigBase

log = logging.getLogger(__name__)

_MAX_STAMP_AGE_NS = 10_000_000_000
_CLOCK_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


class Picamera2Config(SourceConfigBase):
    """Settings of the ``picamera2`` source."""

    type: Literal["picamera2"] = Field("picamera2", description="Selects the Raspberry Pi camera source.")
    camera_num: int = Field(0, ge=0, le=7, description="Which camera: 0 = the first (`rpicam-hello --list-cameras`).")
    main_width: int = Field(
        1280, ge=64, le=9152, description="Main stream width; with the height it picks the sensor mode (field of view)."
    )
    main_height: int = Field(720, ge=64, le=6944, description="Main stream height; must be at least the model input height.")
    lores_format: Literal["auto", "YUV420", "RGB888"] = Field(
        "auto", description="Model-size stream format: auto = RGB888 on a Pi 5, YUV420 on a Pi 4 (which only allows YUV)."
    )
    lores_alignment: Literal["exact", "optimal"] = Field(
        "exact",
        description="exact = lores at the model size (even-rounded, padded rows possible); optimal = picamera2's "
        "align_configuration, which rounds the width down so rows need no padding.",
    )
    fps: float | None = Field(None, gt=0, le=240, description="Fixed frame rate; unset = picamera2's preview default.")
    buffer_count: int = Field(
        4,
        ge=3,
        le=16,
        description="DMA buffers per stream; 4 lets one frame wait and one be inferred without starving the camera.",
    )
    capture_timeout_s: float = Field(
        5.0, gt=0, le=60, description="A frame not arriving within this long counts as a lost camera (reconnect)."
    )


def import_picamera2() -> ModuleType:
    """Import picamera2, or raise a :class:`SourceError` that says how to install it."""
    try:
        return importlib.import_module("picamera2")
    except (ImportError, ValueError) as exc:  # ValueError: "numpy.dtype size changed" (ABI mismatch)
        if "numpy" in str(exc).lower():
            raise SourceError(
                f"picamera2 source: picamera2 fails to import ({exc}): apt's picamera2 is built against numpy 1.x; "
                "install `numpy<2` in the venv (with opencv-python-headless<=4.11.0.86)"
            ) from exc
        raise SourceError(
            f"picamera2 source: picamera2 is not importable ({exc}); on Raspberry Pi OS run "
            "`sudo apt install python3-picamera2` (not pip: libcamera's Python bindings come only from apt) and "
            "create the venv with `python3 -m venv --system-site-packages`"
        ) from exc


def is_pisp(picamera2_module: ModuleType) -> bool:
    """True on a Pi 5 (PiSP ISP), judged as picamera2's examples do (``Picamera2.platform``)."""
    platform = getattr(picamera2_module.Picamera2, "platform", None)
    if platform is None:
        try:
            platform = importlib.import_module("picamera2.platform").get_platform()
        except (ImportError, AttributeError):
            return False  # older picamera2 without platform detection ran only on VC4
    return str(getattr(platform, "name", platform)).upper().endswith("PISP")


def sensor_stamps(sensor_ns: int | None) -> tuple[int, float]:
    """(monotonic ns, wall seconds) of a libcamera ``SensorTimestamp``; see the module docstring."""
    mono_now, wall_now = time.monotonic_ns(), time.time()
    if not sensor_ns:
        return mono_now, wall_now
    boot_now = time.clock_gettime_ns(_CLOCK_BOOTTIME) if _CLOCK_BOOTTIME is not None else mono_now
    age = mono_now - (sensor_ns - (boot_now - mono_now))
    if age > _MAX_STAMP_AGE_NS:
        return mono_now, wall_now
    age = max(age, 0)  # a few µs "in the future" is just the two clock reads' order
    return mono_now - age, wall_now - age / 1e9


def repack_i420(src: np.ndarray, width: int, height: int, stride: int, out: np.ndarray) -> None:
    """Copy a padded I420 buffer ((h*3/2) x stride) into a compact one ((h*3/2) x w), in place."""
    flat = src.reshape(-1)
    np.copyto(out[:height], src[:height, :width])
    dst = out.reshape(-1)
    ch, cw, cs = height // 2, width // 2, stride // 2
    for plane in range(2):  # U then V: each ch rows of cs bytes, of which cw are pixels
        s0, d0 = height * stride + plane * ch * cs, height * width + plane * ch * cw
        np.copyto(dst[d0 : d0 + ch * cw].reshape(ch, cw), flat[s0 : s0 + ch * cs].reshape(ch, cs)[:, :cw])


class _HeldRequest:
    """One ``CompletedRequest`` plus its open ``MappedArray``; released exactly once."""

    def __init__(self, owner: Picamera2Source, request: Any) -> None:
        self._owner, self.request = owner, request
        self.mapped: Any = None
        self._lock = threading.Lock()
        self._done = False

    def release(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        try:
            if self.mapped is not None:
                self.mapped.__exit__(None, None, None)
        finally:
            self.request.release()  # back to the camera
            self._owner._forget(self)


class Picamera2Source(FrameSource):
    """A CSI camera read through picamera2; frames are views of the lores DMA buffer."""

    type_key = "picamera2"
    config_model = Picamera2Config
    config: Picamera2Config
    close_grace_s = 1.0  # how long close() waits for frames still in inference before taking them back

    def __init__(self, config: Picamera2Config) -> None:
        super().__init__(config)
        self._model_size: tuple[int, int] | None = None
        self._module: ModuleType | None = None
        self._cam: Any = None
        self._held: set[_HeldRequest] = set()
        self._held_cond = threading.Condition()
        self._lores: tuple[int, int, int, str] = (0, 0, 0, "")  # width, height, stride, format
        self._pool: FramePool | None = None

    @property
    def live(self) -> bool:
        return True

    def prepare(self, model_width: int, model_height: int) -> None:
        self._model_size = (model_width, model_height)

    def lores_request(self, pisp: bool) -> tuple[tuple[int, int], str]:
        """The lores (size, format) to ask for: the model size, even-rounded as picamera2 requires."""
        cfg = self.config
        fmt = cfg.lores_format if cfg.lores_format != "auto" else ("RGB888" if pisp else "YUV420")
        if fmt == "RGB888" and not pisp:
            raise SourceError(
                f"picamera2 source {cfg.id!r}: lores_format RGB888 needs a Pi 5; a Pi 4's ISP "
                "only gives YUV420 on lores (use lores_format: auto)"
            )
        width, height = self._model_size or (640, 480)
        width, height = width - width % 2, height - height % 2
        if width > cfg.main_width or height > cfg.main_height:
            raise SourceError(
                f"picamera2 source {cfg.id!r}: the model input {width}x{height} is larger than the main "
                f"stream {cfg.main_width}x{cfg.main_height}; raise main_width/main_height"
            )
        return (width, height), fmt

    def open(self) -> None:
        cfg = self.config
        self._module = module = import_picamera2()
        lores_size, lores_fmt = self.lores_request(is_pisp(module))
        try:
            cam = module.Picamera2(cfg.camera_num)
        except Exception as exc:  # picamera2 raises IndexError/RuntimeError for "no camera"
            raise SourceError(
                f"picamera2 source {cfg.id!r}: cannot open camera {cfg.camera_num} ({exc}); check the ribbon cable, "
                "that `rpicam-hello --list-cameras` lists it and that no other program is using it"
            ) from exc
        try:
            config = cam.create_preview_configuration(
                main={"size": (cfg.main_width, cfg.main_height), "format": "YUV420"},  # never read: smallest format
                lores={"size": lores_size, "format": lores_fmt},
                buffer_count=cfg.buffer_count,
                queue=False,  # picamera2 holds no stale request; each capture is a new frame
                controls={"FrameDurationLimits": (round(1e6 / cfg.fps),) * 2} if cfg.fps else {},
                display=None,
                encode=None,
            )
            if cfg.lores_alignment == "optimal":
                cam.align_configuration(config)
            cam.configure(config)
            lores = cam.camera_config["lores"]  # what libcamera actually gave, stride included
            cam.start()
        except Exception as exc:
            self._shutdown(cam)
            raise SourceError(
                f"picamera2 source {cfg.id!r}: camera {cfg.camera_num} rejected main {cfg.main_width}x"
                f"{cfg.main_height} + lores {lores_size[0]}x{lores_size[1]} {lores_fmt} ({exc}); try other sizes"
            ) from exc
        self._cam = cam
        size = lores["size"]  # a tuple; a libcamera.Size in old picamera2 versions
        width, height = (size.width, size.height) if hasattr(size, "width") else (int(size[0]), int(size[1]))
        fmt = str(lores["format"])
        self._lores = (width, height, int(lores["stride"]), fmt)
        self._pool = None
        if fmt == "YUV420" and self._lores[2] != width:
            self._pool = FramePool((height * 3 // 2, width), count=cfg.buffer_count)
            log.info(
                "picamera2 source %s: lores rows padded (%d > %d): YUV420 frames are repacked (a small copy); "
                "a width multiple of 64 (Pi 4) / 128 (Pi 5) avoids it",
                cfg.id,
                self._lores[2],
                width,
            )
        log.info(
            "picamera2 source %s: %s open, lores %dx%d %s",
            cfg.id,
            cam.camera_properties.get("Model", f"camera {cfg.camera_num}"),
            width,
            height,
            fmt,
        )

    def read(self) -> Frame:
        cam, module = self._cam, self._module
        if cam is None or module is None:
            raise RuntimeError(f"picamera2 source {self.config.id!r} read before open()")
        request = cam.capture_request(wait=self.config.capture_timeout_s)  # errors/timeouts -> reconnect
        held = _HeldRequest(self, request)
        with self._held_cond:
            self._held.add(held)
        try:
            metadata = request.get_metadata()
            held.mapped = module.MappedArray(request, "lores")
            view = held.mapped.__enter__().array  # zero-copy view of the DMA buffer
            image, release = self._frame_memory(view, held)
        except BaseException:
            held.release()
            raise
        width, height, _, fmt = self._lores
        mono, wall = sensor_stamps(metadata.get("SensorTimestamp"))
        return Frame(
            image=image,
            pixel_format=PixelFormat.YUV420 if fmt == "YUV420" else PixelFormat.BGR,  # RGB888 = B,G,R bytes
            frame_id=self.next_frame_id(),
            source_id=self.config.id,
            capture_monotonic_ns=mono,
            capture_wall_time=wall,
            width=width,
            height=height,
            _release=release,
        )

    def _frame_memory(self, view: np.ndarray, held: _HeldRequest) -> tuple[np.ndarray, Callable[[], None]]:
        """The frame's pixels and how to give them back: the view itself, or a repacked copy."""
        if self._pool is None:
            return view, held.release
        width, height, stride, _ = self._lores
        buf = self._pool.acquire()
        out = buf if buf is not None else np.empty((height * 3 // 2, width), np.uint8)  # all in flight: one-off
        repack_i420(view, width, height, stride, out)
        held.release()  # copied: the camera gets its buffer back at once
        return out, (self._pool.release_fn(buf) if buf is not None else (lambda: None))

    def _forget(self, held: _HeldRequest) -> None:
        with self._held_cond:
            self._held.discard(held)
            self._held_cond.notify_all()

    def close(self) -> None:
        cam, self._cam = self._cam, None
        with self._held_cond:  # frames still in inference get a moment to come back by themselves
            self._held_cond.wait_for(lambda: not self._held, timeout=self.close_grace_s if cam else 0)
            leftovers = list(self._held)
        if leftovers:
            log.warning("picamera2 source %s: taking back %d frame(s) not released in time", self.config.id, len(leftovers))
        for held in leftovers:  # before closing the camera: a request released after close is unsafe
            held.release()
        if cam is not None:
            self._shutdown(cam)

    def _shutdown(self, cam: Any) -> None:
        for step in ("cancel_all_and_flush", "stop", "close"):  # flush: a timed-out capture job would block stop
            method = getattr(cam, step, None)
            if method is None:
                continue
            try:
                method()
            except Exception as exc:  # noqa: BLE001 - a dead camera may fail to stop; keep closing
                log.debug("picamera2 source %s: %s failed: %s", self.config.id, step, exc)
