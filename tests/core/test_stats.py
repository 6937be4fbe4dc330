"""The streaming histogram stays bounded and its percentiles are within one bucket of exact."""

from __future__ import annotations

import numpy as np

from agent.stats import LatencyHistogram, RateMeter


def test_percentiles_match_numpy_within_bucket_width() -> None:
    rng = np.random.default_rng(3)
    samples = rng.lognormal(mean=1.5, sigma=0.6, size=20_000)
    hist = LatencyHistogram()
    for s in samples:
        hist.record(float(s))
    for q in (50, 95, 99):
        exact = float(np.percentile(samples, q))
        got = hist.percentile(q)
        assert got is not None and exact * 0.97 <= got <= exact * 1.03, (q, exact, got)
    assert hist.count == len(samples) and abs(hist.mean - samples.mean()) < 1e-6 * samples.sum()


def test_memory_does_not_grow_with_samples() -> None:
    hist = LatencyHistogram()
    buckets = len(hist._counts)
    for i in range(100_000):
        hist.record(i % 997 / 10)
    assert len(hist._counts) == buckets


def test_empty_and_extremes() -> None:
    hist = LatencyHistogram()
    assert hist.percentile(50) is None and hist.summary()["p99"] is None
    hist.record(0.0)
    hist.record(10_000_000.0)  # beyond the last bucket: reported as the max seen
    assert hist.percentile(100) == 10_000_000.0


def test_rate_meter() -> None:
    meter = RateMeter(window_s=10)
    for i in range(101):
        meter.tick(now=i * 0.05)
    assert abs(meter.rate(now=5.0) - 20.0) < 1e-6
    assert meter.rate(now=100.0) == 0.0
