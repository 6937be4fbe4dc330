"""Model thread -> decoder: a handoff that costs the model thread no wake-up call.

Waking a thread that is blocked on a lock is a futex call, and when that thread sleeps on
another core it is also an inter-processor interrupt: 9-10 µs measured on a 2-vCPU VM, spent
on the model thread between two invokes, which is 1.3 % of a 0.76 ms model. So for fast models
the decoder does not block on the queue: once its own work is done it sleeps until the
running invoke is expected to end (when it started, plus a moving average of recent invokes)
and then collects the result, which nobody had to wake it for. When the result is not there
yet it blocks the ordinary way.

Models slower than ``fast_invoke_s`` always get the ordinary blocking handoff: there a
wake-up is noise, and an exact wake-up keeps the result latency lowest. For fast models the
price is the sleep's overshoot (the kernel's timer slack, ~50 µs) added to the result latency.
"""

from __future__ import annotations

import queue
import time
from typing import Generic, TypeVar

Item = TypeVar("Item")

FAST_INVOKE_S = 0.002  # below this, a wake-up costs the model thread a share worth saving
_SMOOTHING = 0.1


class InvokeHandoff(Generic[Item]):
    """Ordered single-producer/single-consumer queue between the model thread and the decoder.

    The model thread calls :meth:`invoking` right before each invoke and :meth:`put` right after
    it; the decoder calls :meth:`get`, which returns ``None`` once :meth:`close` was called and
    everything before it was taken.
    """

    def __init__(self, fast_invoke_s: float = FAST_INVOKE_S) -> None:
        self.fast_invoke_s = fast_invoke_s
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._started = 0.0  # perf_counter() at the start of the running (or last) invoke
        self._mean_s = 0.0  # moving average of invoke durations
        self.napped = 0  # items collected after sleeping until the expected end of an invoke
        self.blocked = 0  # items the decoder had to be woken for

    @property
    def mean_invoke_s(self) -> float:
        return self._mean_s

    # ---- the model thread ------------------------------------------------------------
    def invoking(self) -> None:
        self._started = time.perf_counter()

    def put(self, item: Item) -> None:
        elapsed = time.perf_counter() - self._started
        self._mean_s = elapsed if not self._mean_s else self._mean_s + _SMOOTHING * (elapsed - self._mean_s)
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(None)

    # ---- the decoder -----------------------------------------------------------------
    def get(self) -> Item | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            pass
        mean = self._mean_s
        if 0.0 < mean < self.fast_invoke_s:
            remaining = self._started + mean - time.perf_counter()
            if remaining > 0.0:
                time.sleep(remaining)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    pass
                else:
                    self.napped += 1
                    return item
        self.blocked += 1
        return self._queue.get()
