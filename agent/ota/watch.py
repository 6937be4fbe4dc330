"""Which model made each result, and when: the swap gap, per-model latency and trial progress.

A pipeline frame hook (one append per result, on the decode thread); the updater reads it.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.detector import Detector
    from agent.schema import DetectionResult


@dataclass
class _Seen:
    t: float  # monotonic seconds the result left the decoder
    model: str  # "<sha256>@<version>" of the model that produced it
    invoke_ms: float


class ResultWatch:
    """A pipeline frame hook: remembers when results arrived and which model made them (cheap: one append)."""

    def __init__(self, keep: int = 4096) -> None:
        self._seen: deque[_Seen] = deque(maxlen=keep)
        self._cond = threading.Condition()

    def __call__(self, result: DetectionResult) -> None:
        ref = result.model
        seen = _Seen(time.monotonic(), f"{ref.sha256}@{ref.version}", result.timings.invoke_ms)
        with self._cond:
            self._seen.append(seen)
            self._cond.notify_all()

    def snapshot(self) -> list[_Seen]:
        with self._cond:
            return list(self._seen)

    def wait_for(self, model: str, since: float, timeout: float, stop: threading.Event | None = None) -> _Seen | None:
        """The first result from ``model`` after ``since``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for s in self._seen:
                    if s.t >= since and s.model == model:
                        return s
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return None
                self._cond.wait(min(left, 0.2))

    def invoke_p50(self, model: str, since: float = 0.0, last: int = 200) -> float | None:
        xs = [s.invoke_ms for s in self.snapshot() if s.model == model and s.t >= since][-last:]
        return statistics.median(xs) if xs else None

    def count(self, model: str, since: float) -> int:
        return sum(1 for s in self.snapshot() if s.model == model and s.t >= since)

    def swap_gap(self, old: str, new: str, since: float) -> tuple[float | None, float | None]:
        """(ms between the last result of ``old`` and the first of ``new``, the median frame interval before)."""
        seen = self.snapshot()
        first_new = next((i for i, s in enumerate(seen) if s.t >= since and s.model == new), None)
        if first_new is None or first_new == 0:
            return None, None
        gap = (seen[first_new].t - seen[first_new - 1].t) * 1000
        before = [s.t for s in seen[:first_new] if s.model == old][-31:]
        intervals = [(b - a) * 1000 for a, b in itertools.pairwise(before)]
        return gap, (statistics.median(intervals) if intervals else None)


def model_key(detector: Detector) -> str:
    # the version is part of the key: a registry may republish the same bytes under a new version
    return f"{detector.ref.sha256}@{detector.ref.version}"
