"""The synthetic source: ground truth, drift-free pacing, the frame limit, drops and no allocation."""

from __future__ import annotations

import itertools
import random
import time
import tracemalloc

import pytest

from agent.errors import SourceEnded
from agent.sources import base
from agent.sources.base import Backoff, DeadlinePacer, LiveReader, PixelFormat, make_feed
from agent.sources.scenes import CLASSES
from agent.sources.synthetic import SyntheticConfig, SyntheticSource


def test_frames_carry_ground_truth_inside_the_frame() -> None:
    src = SyntheticSource(SyntheticConfig(fps=0, objects=3, seed=7))
    src.open()
    frame = src.read()
    assert frame.image.shape == (480, 640, 3) and frame.pixel_format is PixelFormat.BGR
    assert (frame.width, frame.height) == (640, 480) and frame.frame_id == 1
    assert frame.ground_truth and 1 <= len(frame.ground_truth) <= 3
    for truth in frame.ground_truth:
        x1, y1, x2, y2 = truth.box
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        assert truth.label == CLASSES[truth.class_id]
    first = [t.box for t in frame.ground_truth]
    frame.release()
    assert [t.box for t in src.read().ground_truth] != first, "shapes move between frames"


def test_pacing_holds_the_rate_without_drift() -> None:
    fps, count = 50.0, 25
    src = SyntheticSource(SyntheticConfig(width=160, height=120, fps=fps))
    src.open()
    rng = random.Random(1)
    start = time.monotonic()
    stamps = []
    for _ in range(count + 1):
        frame = src.read()
        stamps.append(frame.capture_monotonic_ns)
        frame.release()
        time.sleep(rng.uniform(0, 0.012))  # consumer work below one period must not push the schedule
    elapsed = time.monotonic() - start
    skipped = src.stats.frames_dropped  # a tick lost to a busy machine is skipped, not made up later
    assert skipped <= 5  # a busy machine may make us late a few times; each skip is accounted for below
    ideal = (count + skipped) / fps
    assert ideal - 0.005 <= elapsed <= ideal + 1 / fps + 0.03, "no drift: the schedule ignores per-frame work"
    gaps_ms = sorted((b - a) / 1e6 for a, b in itertools.pairwise(stamps))
    assert abs(gaps_ms[len(gaps_ms) // 2] - 1000 / fps) < 2.0


class _FakeClock:
    """Stands in for the ``time`` module inside the pacer: sleeping just advances the clock."""

    def __init__(self) -> None:
        self.now_ns = 1_000_000_000
        self.slept: list[float] = []

    def monotonic_ns(self) -> int:
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_ns += round(seconds * 1e9)


def test_pacer_keeps_phase_and_skips_missed_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(base, "time", clock)
    pacer = DeadlinePacer(100.0)  # ticks every 10 ms from the first wait
    start = clock.now_ns
    assert pacer.wait() == 0 and clock.slept == []
    clock.now_ns += 3_000_000  # 3 ms of work
    assert pacer.wait() == 0 and clock.slept == [0.007]  # to the 10 ms tick, not 10 ms after the work
    clock.now_ns += 55_000_000  # stalled five and a half periods
    assert pacer.wait() == 4  # ticks 20..50 ms are gone (no burst); this call takes the 60 ms one late
    assert pacer.wait() == 0 and clock.now_ns - start == 70_000_000  # back on the original 10 ms grid
    assert DeadlinePacer(0).wait() == 0  # unpaced


def test_frame_limit_ends_the_source() -> None:
    src = SyntheticSource(SyntheticConfig(fps=0, frames=5, width=64, height=48))
    src.open()
    for _ in range(5):
        src.read().release()
    with pytest.raises(SourceEnded):
        src.read()


def test_frame_limit_ends_a_live_feed() -> None:
    src = SyntheticSource(SyntheticConfig(fps=0, frames=3, width=64, height=48))
    feed = make_feed(src)
    assert isinstance(feed, LiveReader)
    feed.start()
    try:
        with pytest.raises(SourceEnded):
            for _ in range(100):
                frame = feed.next_frame(timeout=1.0)
                if frame is not None:
                    frame.release()
    finally:
        feed.stop()


def test_slow_consumer_drops_frames_and_stays_within_the_pool() -> None:
    buffers = 4
    src = SyntheticSource(SyntheticConfig(width=160, height=120, fps=200, buffers=buffers))
    feed = LiveReader(src, backoff=Backoff(0.01, 0.05))
    feed.start()
    addresses: set[int] = set()
    consumed = 0
    try:
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            frame = feed.next_frame(timeout=1.0)
            assert frame is not None and frame.ground_truth is not None
            addresses.add(frame.image.__array_interface__["data"][0])
            time.sleep(0.025)  # inference far slower than the camera
            frame.release()
            consumed += 1
    finally:
        feed.stop()
    assert src.stats.frames_dropped > consumed, "most frames should be dropped"
    # drops include ticks lost while every buffer was held, which were never captured
    assert src.stats.frames_captured >= consumed
    assert len(addresses) <= buffers, "frames only ever live in the pool's buffers"


def test_steady_state_allocates_no_frame_sized_array() -> None:
    src = SyntheticSource(SyntheticConfig(fps=0, width=640, height=480))
    src.open()
    for _ in range(5):  # warm-up: pool, caches, first-call allocations
        src.read().release()
    frame_bytes = 640 * 480 * 3
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(40):
            src.read().release()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < frame_bytes // 20, f"peak grew by {peak - base} bytes"
