"""The OpenCV source on real files and a real local HTTP stream, plus LiveReader reconnects."""

from __future__ import annotations

import functools
import http.server
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from agent.errors import SourceEnded, SourceError
from agent.sources.base import Backoff, FramePool, LiveReader, PulledFeed, make_feed
from agent.sources.opencv import FFMPEG_OPTIONS_ENV, OpenCVConfig, OpenCVSource, merge_ffmpeg_options, redact_url

from .conftest import FlakySource, frame_index, write_video


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.avi", frames=10, fps=20.0)


def _events() -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    events: list[tuple[str, dict[str, Any]]] = []
    return events, lambda kind, data: events.append((kind, data))


# -- configuration ---------------------------------------------------------------------------
def test_config_needs_exactly_one_input() -> None:
    with pytest.raises(ValidationError, match="exactly one of device, url or file"):
        OpenCVConfig()
    with pytest.raises(ValidationError, match=r"got device, file"):
        OpenCVConfig(device=0, file="a.mp4")
    assert OpenCVConfig(device="2").device == 2
    assert OpenCVConfig(device="/dev/v4l/by-id/usb-cam").device == "/dev/v4l/by-id/usb-cam"
    with pytest.raises(ValidationError, match="/dev/"):
        OpenCVConfig(device="video0")
    with pytest.raises(ValidationError, match="url must start with"):
        OpenCVConfig(url="ftp://cam/x")
    with pytest.raises(ValidationError, match="width: only for a camera"):
        OpenCVConfig(file="a.mp4", width=640)
    with pytest.raises(ValidationError, match="loop: only for a video"):
        OpenCVConfig(url="rtsp://cam/x", loop=True)
    with pytest.raises(ValidationError, match="rtsp_transport: only for a stream"):
        OpenCVConfig(device=0, rtsp_transport="udp")


def test_live_depends_on_input_and_pace() -> None:
    assert OpenCVSource(OpenCVConfig(device=0)).live
    assert OpenCVSource(OpenCVConfig(url="rtsp://cam/x")).live
    assert OpenCVSource(OpenCVConfig(file="a.avi")).live  # realtime is the default
    assert not OpenCVSource(OpenCVConfig(file="a.avi", pace="fast")).live


# -- files -----------------------------------------------------------------------------------
def test_fast_file_reads_every_frame_then_ends(clip: Path) -> None:
    src = OpenCVSource(OpenCVConfig(file=str(clip), pace="fast", buffers=3))
    assert isinstance(make_feed(src), PulledFeed)
    src.open()
    indices, addresses = [], set()
    with pytest.raises(SourceEnded):
        while True:
            frame = src.read()
            assert frame.image.shape == (48, 64, 3) and frame.capture_monotonic_ns > 0
            indices.append(frame_index(frame.image))
            addresses.add(frame.image.__array_interface__["data"][0])
            frame.release()
    src.close()
    assert indices == list(range(10))
    assert len(addresses) <= 1 + 3, "after the first frame, decoding goes into the recycled buffers"


def test_loop_restarts_the_file(clip: Path) -> None:
    src = OpenCVSource(OpenCVConfig(file=str(clip), pace="fast", loop=True))
    src.open()
    indices = []
    for _ in range(25):
        frame = src.read()
        indices.append(frame_index(frame.image))
        frame.release()
    src.close()
    assert indices == [i % 10 for i in range(25)]


def test_realtime_file_is_paced_at_its_fps(clip: Path) -> None:
    src = OpenCVSource(OpenCVConfig(file=str(clip)))
    src.open()
    start = time.monotonic()
    stamps = []
    for _ in range(10):
        frame = src.read()
        stamps.append(frame.capture_monotonic_ns)
        frame.release()
    elapsed = time.monotonic() - start
    src.close()
    assert 0.44 <= elapsed <= 0.56, f"9 frame periods at 20 fps should take 0.45 s, took {elapsed:.3f}"
    gaps_ms = np.diff(stamps) / 1e6
    assert abs(gaps_ms.mean() - 50.0) < 3.0


def test_unexpected_buffer_is_handled_gracefully(clip: Path) -> None:
    src = OpenCVSource(OpenCVConfig(file=str(clip), pace="fast"))
    src.open()
    src.read().release()
    src._pool = FramePool((10, 10, 3), count=2)  # as if the stream had changed resolution
    src._pool_shape = (10, 10, 3)
    frame = src.read()
    assert frame.image.shape == (48, 64, 3) and frame_index(frame.image) == 1
    frame.release()
    assert src._pool_shape == (48, 64, 3), "the pool follows the new frame size"
    frame = src.read()
    assert frame_index(frame.image) == 2
    src.close()


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError) as err:
        OpenCVSource(OpenCVConfig(file=str(missing))).open()
    assert str(missing) in str(err.value)


def test_undecodable_file_is_a_source_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match=r"junk\.mp4"):
        OpenCVSource(OpenCVConfig(file=str(junk))).open()


# -- cameras and streams ---------------------------------------------------------------------
def test_missing_v4l2_device_is_a_source_error() -> None:
    node = next(f"/dev/video{n}" for n in range(90, 200) if not os.path.exists(f"/dev/video{n}"))
    for device in (node, int(node.removeprefix("/dev/video"))):
        with pytest.raises(SourceError) as err:
            OpenCVSource(OpenCVConfig(device=device)).open()
        assert node in str(err.value) and "v4l2-ctl --list-devices" in str(err.value)


def test_ffmpeg_options_merge_without_clobbering() -> None:
    assert merge_ffmpeg_options(None, "tcp") == "rtsp_transport;tcp"
    assert merge_ffmpeg_options("stimeout;5000000", "tcp") == "stimeout;5000000|rtsp_transport;tcp"
    assert merge_ffmpeg_options("rtsp_transport;udp|fflags;nobuffer", "tcp") == "rtsp_transport;udp|fflags;nobuffer"


def test_unreachable_rtsp_fails_fast_without_leaking_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, "fflags;nobuffer")
    url = "rtsp://viewer:s3cret@127.0.0.1:9/stream"  # port 9 (discard): connection refused
    src = OpenCVSource(OpenCVConfig(url=url, open_timeout_ms=2000))
    start = time.monotonic()
    with pytest.raises(SourceError) as err:
        src.open()
    assert time.monotonic() - start < 2.5
    assert "127.0.0.1:9/stream" in str(err.value) and "s3cret" not in str(err.value)
    assert os.environ[FFMPEG_OPTIONS_ENV] == "fflags;nobuffer", "the user's options are left as they were"
    assert redact_url(url) == "rtsp://viewer:***@127.0.0.1:9/stream"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """Serves tmp_path over HTTP on localhost: a real network stream that ends and can be reopened."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_stream_that_ends_is_reconnected(clip: Path, http_server: str) -> None:
    src = OpenCVSource(OpenCVConfig(url=f"{http_server}/{clip.name}", read_timeout_ms=2000))
    events, on_event = _events()
    feed = make_feed(src, on_event)
    assert isinstance(feed, LiveReader)
    feed._backoff = Backoff(initial=0.01, maximum=0.05)  # or make_feed(..., backoff=...)
    feed.start()
    got = 0
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (src.stats.reconnects < 1 or got < 15):
            frame = feed.next_frame(timeout=0.5)
            if frame is not None:
                got += 1
                frame.release()
    finally:
        feed.stop()
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["camera_lost", "camera_back"]
    assert src.stats.reconnects >= 1 and got >= 15, "frames flow again after the reconnect"
    assert "lost stream" in (src.stats.last_error or "")


# -- LiveReader reconnect with back-off (a real flaky source, not a mock) ---------------------
def test_reader_reconnects_with_growing_backoff() -> None:
    src = FlakySource(good_reads=3, failed_opens=3)
    events, on_event = _events()
    feed = LiveReader(src, on_event, Backoff(initial=0.02, maximum=1.0, factor=2.0))
    feed.start()
    got = 0
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and got < 6:
            frame = feed.next_frame(timeout=0.2)
            if frame is not None:
                got += 1
                frame.release()
    finally:
        feed.stop()
    assert [kind for kind, _ in events] == ["camera_lost", "camera_back"]
    assert events[0][1]["source"] == "flaky" and "read failed" in events[0][1]["error"]
    assert src.stats.reconnects == 1 and src.stats.connected is False  # stopped now
    assert got >= 6, "the consumer gets frames again after the camera is back"
    gaps = np.diff(src.open_attempts[1:])  # [0] is start(); then the reconnect attempts
    assert len(gaps) == 3
    # back-off doubles; on a loaded machine each gap may stretch, so check growth, not exact doubling
    assert all(later > earlier * 1.2 for earlier, later in itertools.pairwise(gaps)) and gaps[-1] > gaps[0] * 2.5, gaps
    assert src.open_attempts[1] - src.open_attempts[0] >= 0.02
