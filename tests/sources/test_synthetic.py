"""The synthetic source: ground truth, drift-free pacing, the frame limit, drops and no allocation."""

from __future__ import annotations

import itertools
import random
import time
import tracemalloc

import pytest

from agent.errors import SourceEnded
from agent.sources.base import Backoff, LiveReader, PixelFormat, make_feed
from agent.sources.scenes import CLASSES
from agent.sources.synthetic import DeadlinePacer, SyntheticConfig, SyntheticSource


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
    ideal = count / fps
    assert ideal - 0.005 <= elapsed <= ideal + 1 / fps + 0.03
    gaps_ms = [(b - a) / 1e6 for a, b in itertools.pairwise(stamps)]
    assert abs(sum(gaps_ms) / len(gaps_ms) - 1000 / fps) < 2.0
    assert src.stats.frames_dropped == 0


def test_pacer_skips_missed_ticks_instead_of_bursting() -> None:
    pacer = DeadlinePacer(100.0)
    assert pacer.wait() == 0
    time.sleep(0.055)  # five and a half periods late
    assert pacer.wait() in (4, 5)
    start = time.monotonic()
    pacer.wait()
    assert time.monotonic() - start > 0.002, "after skipping, the next tick is in the future again"


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
    assert src.stats.frames_captured >= consumed + src.stats.frames_dropped - buffers
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
