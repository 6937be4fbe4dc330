"""Shared helpers for the source tests: media written on the fly, a flaky live source, and a
test double of the ``picamera2`` module (there is no camera on a CI machine or workstation).
"""

from __future__ import annotations

import enum
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.errors import SourceError
from agent.sources.base import Frame, FrameSource, PixelFormat, SourceConfigBase, now_stamps


def frame_value(index: int) -> int:
    """The grey level of frame ``index`` in videos written by :func:`write_video`."""
    return 10 + (index * 20) % 240


def write_video(path: Path, frames: int = 10, size: tuple[int, int] = (64, 48), fps: float = 20.0) -> Path:
    """A small MJPG .avi whose frame i is a flat grey of :func:`frame_value` (i)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "opencv-python-headless should write MJPG/AVI"
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), frame_value(i), np.uint8))
    writer.release()
    return path


def frame_index(image: np.ndarray) -> int:
    """Which frame of a :func:`write_video` clip ``image`` is (JPEG is lossy: nearest grey level)."""
    return round((float(image.mean()) - 10) / 20)


# -- a live source that loses its device and comes back ------------------------------------------
class FlakyConfig(SourceConfigBase):
    pass


class FlakySource(FrameSource):
    """A real live source: serves frames, then its device "disappears" for a while.

    After ``good_reads`` frames every read fails until the device is back; reopening fails
    ``failed_opens`` times first. Records when each open was attempted, so a test can check
    that the reader backs off. (No ``type_key``: it must not join the plugin registry.)
    """

    config_model = FlakyConfig

    def __init__(self, good_reads: int = 3, failed_opens: int = 3, interval_s: float = 0.002) -> None:
        super().__init__(FlakyConfig(id="flaky"))
        self.good_reads, self.failed_opens, self.interval_s = good_reads, failed_opens, interval_s
        self.open_attempts: list[float] = []
        self.reads = 0
        self.device_up = True
        self.went_down = False
        self.image = np.zeros((8, 8, 3), np.uint8)

    @property
    def live(self) -> bool:
        return True

    def open(self) -> None:
        self.open_attempts.append(time.monotonic())
        if not self.device_up:
            if self.failed_opens > 0:
                self.failed_opens -= 1
                raise SourceError("flaky source: /dev/flaky0 is gone")
            self.device_up = True

    def read(self) -> Frame:
        time.sleep(self.interval_s)
        if self.reads == self.good_reads and not self.went_down:
            self.device_up, self.went_down = False, True
        if not self.device_up:
            raise OSError("flaky source: read failed")
        self.reads += 1
        mono, wall = now_stamps()
        return Frame(self.image, PixelFormat.BGR, self.next_frame_id(), "flaky", mono, wall, 8, 8)

    def close(self) -> None:
        pass


# -- a test double of picamera2 --------------------------------------------------------------
class Platform(enum.Enum):
    VC4 = 0
    PISP = 1


@dataclass
class CameraWorld:
    """State of the fake camera system; a test tweaks it before/while a source runs."""

    platform: Platform = Platform.VC4
    stride_align: int = 1  # bytes each row is padded to (1 = no padding)
    cameras: int = 1
    frame_interval_s: float = 0.002
    sensor_age_ns: int = 3_000_000  # how long before capture_request() returns the frame was exposed
    fail_captures: set[int] = field(default_factory=set)  # capture numbers (1-based, global) that raise
    instances: list[Any] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    captures: int = 0
    starved: int = 0  # captures attempted while every buffer was held by the application
    module: types.ModuleType | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def unreleased(self) -> list[Any]:
        return [r for r in self.requests if r.ref_count != 0]


def _row_bytes(fmt: str, width: int) -> int:
    return width * 3 if fmt in ("RGB888", "BGR888") else width * 4 if fmt.startswith("X") else width


def _make_module(world: CameraWorld) -> types.ModuleType:
    class CompletedRequest:
        """Reference-counted like the real one; its ``buffer`` stands for the DMA buffer."""

        def __init__(self, config: dict[str, Any], seq: int) -> None:
            self.config, self.seq = config, seq
            self.ref_count, self.acquires, self.releases, self.mapped_open = 1, 1, 0, 0
            lores = config["lores"]
            rows = lores["size"][1] * 3 // 2 if lores["format"] == "YUV420" else lores["size"][1]
            self.buffer = ((np.arange(rows * lores["stride"]) + seq) % 251).astype(np.uint8)
            boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            self.metadata = {"SensorTimestamp": boot - world.sensor_age_ns, "ExposureTime": 10_000}

        def acquire(self) -> None:
            if self.ref_count == 0:
                raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
            self.ref_count += 1
            self.acquires += 1

        def release(self) -> None:
            assert self.mapped_open == 0, "request released while its MappedArray is still open"
            self.ref_count -= 1
            self.releases += 1
            if self.ref_count < 0:
                raise RuntimeError("CompletedRequest: lock now has negative ref_count")

        def get_metadata(self) -> dict[str, Any]:
            assert self.ref_count > 0, "metadata of a released request"
            return dict(self.metadata)

        def make_buffer(self, name: str) -> np.ndarray:
            return self.buffer.copy()  # the real one copies too

    class MappedArray:
        def __init__(self, request: CompletedRequest, stream: str, reshape: bool = True) -> None:
            assert stream == "lores", "the source should only map the lores stream"
            self.request, self.array = request, None

        def __enter__(self) -> MappedArray:
            req = self.request
            if req.ref_count <= 0:
                raise RuntimeError("mapping a released request")
            req.mapped_open += 1
            cfg = req.config["lores"]
            (w, h), stride = cfg["size"], cfg["stride"]
            if cfg["format"] == "YUV420":
                self.array = req.buffer.reshape(h * 3 // 2, stride)
            else:  # as picamera2 does: cut the row padding off, then split pixels
                self.array = req.buffer.reshape(h, stride)[:, : w * 3].reshape(h, w, 3)
            return self

        def __exit__(self, *exc: object) -> None:
            self.request.mapped_open -= 1
            self.array = None

    def align_stream(stream: dict[str, Any], optimal: bool = True) -> None:
        align = 2
        if optimal:
            align = 32 if Picamera2.platform == Platform.VC4 else 64
            align = align * 2 if stream["format"] in ("YUV420", "YVU420") else align
        w, h = stream["size"]
        stream["size"] = (w - w % align, h - h % 2)

    class Picamera2:
        platform = world.platform

        def __init__(self, camera_num: int = 0) -> None:
            if camera_num >= world.cameras:
                raise IndexError("list index out of range")
            self.camera_config: dict[str, Any] | None = None
            self.configured_with: dict[str, Any] | None = None
            self.started = self.closed = False
            self.seq = 0
            world.instances.append(self)

        @property
        def camera_properties(self) -> dict[str, Any]:
            return {"Model": "imx708"}

        def create_preview_configuration(
            self, main: dict | None = None, lores: dict | None = None, buffer_count: int = 4, queue: bool = True,
            controls: dict | None = None, display: str | None = "main", encode: str | None = "main", **_: Any,
        ) -> dict[str, Any]:  # fmt: skip
            main = {"format": "XBGR8888", "size": (640, 480)} | (main or {})
            align_stream(main, optimal=False)
            if lores is not None:
                lores = {"format": "YUV420", "size": main["size"]} | lores
                align_stream(lores, optimal=False)
            return {"main": main, "lores": lores, "buffer_count": buffer_count, "queue": queue,
                    "controls": controls or {}, "display": display, "encode": encode}  # fmt: skip

        @staticmethod
        def align_configuration(config: dict[str, Any], optimal: bool = True) -> None:
            align_stream(config["main"], optimal)
            if config.get("lores"):
                align_stream(config["lores"], optimal)

        def configure(self, config: dict[str, Any]) -> None:
            lores, main = config["lores"], config["main"]
            if self.platform == Platform.VC4 and lores["format"] != "YUV420":
                raise RuntimeError("lores stream must be YUV")
            if lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            self.configured_with = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
            self.camera_config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
            for name in ("main", "lores"):
                stream = self.camera_config[name]
                row = _row_bytes(stream["format"], stream["size"][0])
                stream["stride"] = -(-row // world.stride_align) * world.stride_align

        def start(self) -> None:
            self.started = True

        def stop(self) -> None:
            self.started = False

        def cancel_all_and_flush(self) -> None:
            pass

        def close(self) -> None:
            self.stop()
            self.closed = True
            self.unreleased_at_close = [r for r in world.requests if r.ref_count and r.config is self.camera_config]

        def capture_request(self, wait: float | None = None, flush: bool | None = None) -> CompletedRequest:
            assert self.started and not self.closed, "capture on a stopped camera"
            with world.lock:
                world.captures += 1
                number = world.captures
            if number in world.fail_captures:
                raise RuntimeError("Camera frontend has timed out!")
            held = [r for r in world.requests if r.ref_count and r.config is self.camera_config]
            if len(held) >= self.camera_config["buffer_count"]:
                world.starved += 1
                raise TimeoutError("no buffer left for the camera")
            time.sleep(world.frame_interval_s)
            self.seq += 1
            request = CompletedRequest(self.camera_config, self.seq)
            world.requests.append(request)
            return request

    def get_platform() -> Platform:
        return Picamera2.platform

    module = types.ModuleType("picamera2")
    module.__doc__ = "Test double of picamera2 (no camera here)."
    module.Picamera2, module.MappedArray, module.CompletedRequest = Picamera2, MappedArray, CompletedRequest
    module.Platform = Platform
    platform_module = types.ModuleType("picamera2.platform")
    platform_module.Platform, platform_module.get_platform = Platform, get_platform
    module.platform = platform_module
    return module


@pytest.fixture
def camera_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[CameraWorld]:
    """Installs the picamera2 test double into ``sys.modules`` for this test only."""
    world = CameraWorld()
    world.module = _make_module(world)
    monkeypatch.setitem(sys.modules, "picamera2", world.module)
    monkeypatch.setitem(sys.modules, "picamera2.platform", world.module.platform)
    yield world


def set_platform(world: CameraWorld, platform: Platform) -> None:
    """Make the double behave like a Pi 4 (VC4) or a Pi 5 (PISP)."""
    world.platform = platform
    assert world.module is not None
    world.module.Picamera2.platform = platform
