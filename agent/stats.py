"""Bounded streaming statistics for the hot path: latency histograms and rate counters.

A histogram keeps counts in fixed log-spaced buckets (about 2 % wide), so memory stays
constant however long the agent runs and a percentile is accurate to a bucket's width.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import deque

_MIN_MS = 0.001
_MAX_MS = 600_000.0
_RATIO = 1.02
_EDGES = [_MIN_MS * _RATIO**i for i in range(int(math.log(_MAX_MS / _MIN_MS, _RATIO)) + 2)]


class LatencyHistogram:
    """Milliseconds in log buckets; ``percentile`` returns a bucket's upper edge (never below the true value)."""

    __slots__ = ("_counts", "_lock", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts = [0] * (len(_EDGES) + 1)
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, ms: float) -> None:
        i = bisect_left(_EDGES, ms)
        with self._lock:
            self._counts[i] += 1
            self.count += 1
            self.total += ms
            if ms < self.min:
                self.min = ms
            if ms > self.max:
                self.max = ms

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0..100), or None before the first sample."""
        with self._lock:
            if not self.count:
                return None
            rank = max(1, math.ceil(q / 100 * self.count))
            seen = 0
            for i, n in enumerate(self._counts):
                seen += n
                if seen >= rank:
                    edge = _EDGES[i] if i < len(_EDGES) else self.max
                    return min(edge, self.max)
        return self.max

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary(self) -> dict[str, float | None]:
        return {
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "mean": self.mean,
            "max": self.max if self.count else None,
        }

    def bucket_counts(self) -> list[int]:
        """A copy of the per-bucket counts; the difference of two copies is the window between them."""
        with self._lock:
            return list(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts = [0] * (len(_EDGES) + 1)
            self.count, self.total, self.min, self.max = 0, 0.0, math.inf, 0.0


def window_summary(before: list[int], after: list[int]) -> dict[str, float | None]:
    """p50/p95/p99/max (bucket upper edges, ms) and count of the samples recorded between two ``bucket_counts``."""
    window = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(window)
    out: dict[str, float | None] = {"p50": None, "p95": None, "p99": None, "max": None, "count": float(total)}
    if not total:
        return out
    last = max(i for i, n in enumerate(window) if n)
    out["max"] = _EDGES[min(last, len(_EDGES) - 1)]
    for q, key in ((50, "p50"), (95, "p95"), (99, "p99")):
        rank, seen = max(1, math.ceil(q / 100 * total)), 0
        for i, n in enumerate(window):
            seen += n
            if seen >= rank:
                out[key] = _EDGES[min(i, len(_EDGES) - 1)]
                break
    return out


class RateMeter:
    """Events per second over a sliding window of recent timestamps (bounded)."""

    def __init__(self, window_s: float = 5.0, max_events: int = 4096) -> None:
        self._window = window_s
        self._stamps: deque[float] = deque(maxlen=max_events)

    def tick(self, now: float | None = None) -> None:
        self._stamps.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._stamps and now - self._stamps[0] > self._window:
            self._stamps.popleft()
        if len(self._stamps) < 2:
            return 0.0
        span = self._stamps[-1] - self._stamps[0]
        return (len(self._stamps) - 1) / span if span > 0 else 0.0
