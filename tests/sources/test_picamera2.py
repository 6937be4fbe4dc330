"""The picamera2 source against a TEST DOUBLE of the picamera2 module.

There is no camera (and no libcamera) on this machine, so ``camera_world`` (conftest.py)
installs a fake ``picamera2`` into ``sys.modules`` for each test only: ``Picamera2`` with
the configuration/start/stop/close/capture_request calls the source uses and the
``platform`` class attribute it reads, a reference-counted ``CompletedRequest`` owning a
buffer, and a ``MappedArray`` yielding a view into that buffer. Only the camera is faked;
the source, LiveReader and slot under test are the real ones.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pytest

from agent.errors import SourceError
from agent.sources.base import Backoff, LiveReader, PixelFormat
from agent.sources.picamera2 import Picamera2Config, Picamera2Source, repack_i420, sensor_stamps

from .conftest import CameraWorld, Platform, set_platform


def _source(model: tuple[int, int] = (320, 320), **cfg: Any) -> Picamera2Source:
    src = Picamera2Source(Picamera2Config(**cfg))
    src.prepare(*model)
    return src


def _assert_all_released_once(world: CameraWorld) -> None:
    assert world.requests, "the camera produced requests"
    for request in world.requests:
        assert (request.acquires, request.releases, request.ref_count) == (1, 1, 0), request.seq
        assert request.mapped_open == 0


def test_missing_picamera2_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as on a machine without it
    with pytest.raises(SourceError) as err:
        _source().open()
    assert "apt install python3-picamera2" in str(err.value) and "--system-site-packages" in str(err.value)


def test_pi4_gets_yuv420_lores_at_model_size(camera_world: CameraWorld) -> None:
    set_platform(camera_world, Platform.VC4)
    src = _source((320, 256))
    src.open()
    cam = camera_world.instances[0]
    cfg = cam.configured_with
    assert cfg["lores"] == {"format": "YUV420", "size": (320, 256)}
    assert cfg["main"]["size"] == (1280, 720) and cfg["buffer_count"] == 4 and cfg["queue"] is False
    frame = src.read()
    assert frame.pixel_format is PixelFormat.YUV420 and frame.image.shape == (384, 320)
    assert (frame.width, frame.height) == (320, 256)
    frame.release()
    src.close()
    assert cam.closed


def test_pi5_gets_rgb888_lores_as_bgr(camera_world: CameraWorld) -> None:
    set_platform(camera_world, Platform.PISP)
    src = _source((320, 320), fps=30)
    src.open()
    cfg = camera_world.instances[0].configured_with
    assert cfg["lores"] == {"format": "RGB888", "size": (320, 320)}
    assert cfg["controls"] == {"FrameDurationLimits": (33333, 33333)}
    frame = src.read()
    assert frame.pixel_format is PixelFormat.BGR and frame.image.shape == (320, 320, 3)
    frame.release()
    src.close()


def test_lores_format_override(camera_world: CameraWorld) -> None:
    set_platform(camera_world, Platform.PISP)
    src = _source(lores_format="YUV420")
    src.open()
    assert camera_world.instances[0].configured_with["lores"]["format"] == "YUV420"
    src.close()
    set_platform(camera_world, Platform.VC4)
    with pytest.raises(SourceError, match="needs a Pi 5"):
        _source(lores_format="RGB888").open()


def test_frames_are_zero_copy_views_released_once(camera_world: CameraWorld) -> None:
    for platform in (Platform.VC4, Platform.PISP):
        set_platform(camera_world, platform)
        camera_world.requests.clear()
        src = _source()
        src.open()
        for _ in range(3):
            frame = src.read()
            request = camera_world.requests[-1]
            assert np.shares_memory(frame.image, request.buffer), "the frame is a view of the camera buffer"
            assert request.ref_count == 1 and request.mapped_open == 1
            frame.release()
            assert request.ref_count == 0 and request.releases == 1 and request.mapped_open == 0
            frame.release()  # idempotent
            assert request.releases == 1
        src.close()
        _assert_all_released_once(camera_world)


def test_sensor_timestamp_becomes_the_capture_time(camera_world: CameraWorld) -> None:
    camera_world.sensor_age_ns = 7_000_000
    src = _source()
    src.open()
    frame = src.read()
    mono_now, wall_now = time.monotonic_ns(), time.time()
    assert 6.5 <= (mono_now - frame.capture_monotonic_ns) / 1e6 <= 12.0
    assert 0.0065 <= wall_now - frame.capture_wall_time <= 0.012
    frame.release()
    src.close()


def test_missing_or_implausible_sensor_timestamp_falls_back_to_now() -> None:
    for stamp in (None, 0, 12345):  # absent, zero, from some other clock (far in the past)
        mono, wall = sensor_stamps(stamp)
        assert abs(time.monotonic_ns() - mono) < 5_000_000 and abs(time.time() - wall) < 0.005


def test_live_reader_releases_every_request(camera_world: CameraWorld) -> None:
    camera_world.frame_interval_s = 0.002
    src = _source()
    feed = LiveReader(src, backoff=Backoff(0.01, 0.05))
    feed.start()
    consumed = 0
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            frame = feed.next_frame(timeout=1.0)
            assert frame is not None
            time.sleep(0.02)  # slow inference: the slot drops (and releases) stale frames
            frame.release()
            consumed += 1
    finally:
        feed.stop()
    assert src.stats.frames_dropped > 0 and consumed > 5
    assert camera_world.starved == 0, "one frame in the slot + one in inference never starves 4 buffers"
    assert camera_world.instances[0].unreleased_at_close == []
    _assert_all_released_once(camera_world)


def test_frame_held_at_stop_is_taken_back_once(camera_world: CameraWorld) -> None:
    src = _source()
    src.close_grace_s = 0.05
    feed = LiveReader(src)
    feed.start()
    held = feed.next_frame(timeout=1.0)
    assert held is not None
    feed.stop()  # the consumer never released it
    assert camera_world.instances[0].unreleased_at_close == []
    held.release()  # a late release is harmless
    _assert_all_released_once(camera_world)


def test_camera_error_triggers_reconnect(camera_world: CameraWorld) -> None:
    camera_world.fail_captures = {5}
    src = _source()
    events: list[str] = []
    feed = LiveReader(src, lambda kind, data: events.append(kind), Backoff(initial=0.01, maximum=0.05))
    feed.start()
    got = 0
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and (src.stats.reconnects < 1 or got < 10):
            frame = feed.next_frame(timeout=0.5)
            if frame is not None:
                got += 1
                frame.release()
    finally:
        feed.stop()
    assert events == ["camera_lost", "camera_back"] and src.stats.reconnects == 1
    assert "timed out" in (src.stats.last_error or "")
    assert len(camera_world.instances) == 2 and all(cam.closed for cam in camera_world.instances)
    _assert_all_released_once(camera_world)


def test_padded_yuv_rows_are_repacked_and_released_at_once(camera_world: CameraWorld) -> None:
    camera_world.stride_align = 64
    src = _source((300, 200))
    src.open()
    frame = src.read()
    request = camera_world.requests[-1]
    assert request.ref_count == 0, "copied out, so the camera has its buffer back already"
    w, h, stride = 300, 200, 320
    assert frame.image.shape == (300, 300) and not np.shares_memory(frame.image, request.buffer)
    buf = request.buffer
    y = buf[: h * stride].reshape(h, stride)[:, :w]
    u = buf[h * stride : h * stride + (h // 2) * (stride // 2)].reshape(h // 2, stride // 2)[:, : w // 2]
    v = buf[h * stride + (h // 2) * (stride // 2) :].reshape(h // 2, stride // 2)[:, : w // 2]
    expected = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h * 3 // 2, w)
    assert np.array_equal(frame.image, expected)
    frame.release()
    src.close()
    _assert_all_released_once(camera_world)


def test_repack_i420_without_padding_is_a_plain_copy() -> None:
    src = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4)  # 4x4 I420
    out = np.empty_like(src)
    repack_i420(src, 4, 4, 4, out)
    assert np.array_equal(out, src)


def test_optimal_alignment_uses_picamera2s_rules(camera_world: CameraWorld) -> None:
    src = _source((300, 300), lores_alignment="optimal")
    src.open()
    assert camera_world.instances[0].configured_with["lores"]["size"] == (256, 300)  # VC4 YUV420: multiple of 64
    frame = src.read()
    assert frame.width == 256 and frame.image.shape == (450, 256)
    frame.release()
    src.close()


def test_model_larger_than_main_is_a_clear_error(camera_world: CameraWorld) -> None:
    with pytest.raises(SourceError, match="raise main_width/main_height"):
        _source((1024, 1024)).open()


def test_missing_camera_is_a_clear_error(camera_world: CameraWorld) -> None:
    with pytest.raises(SourceError, match="cannot open camera 1") as err:
        _source(camera_num=1).open()
    assert "rpicam-hello --list-cameras" in str(err.value)
