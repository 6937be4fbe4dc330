"""InvokeHandoff: order, close, and the nap that spares the model thread a wake-up call.

The "model" here is a sleep of known length on a real thread; the decoder is a real thread.
"""

from __future__ import annotations

import threading
import time

from agent.handoff import InvokeHandoff


def _run(handoff: InvokeHandoff[int], items: int, invoke_s: float, decode_s: float) -> tuple[list[int], list[float]]:
    got: list[int] = []
    late: list[float] = []  # how long after its put each item reached the decoder
    put_at: dict[int, float] = {}

    def decoder() -> None:
        while (item := handoff.get()) is not None:
            late.append(time.perf_counter() - put_at[item])
            got.append(item)
            time.sleep(decode_s)

    thread = threading.Thread(target=decoder)
    thread.start()
    for i in range(items):
        handoff.invoking()
        time.sleep(invoke_s)  # the invoke: the GIL is free, as it is inside the runtime
        put_at[i] = time.perf_counter()
        handoff.put(i)
    handoff.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    return got, late


def test_fast_model_results_are_collected_after_a_nap_in_order() -> None:
    handoff: InvokeHandoff[int] = InvokeHandoff(fast_invoke_s=0.05)
    got, late = _run(handoff, items=60, invoke_s=0.004, decode_s=0.001)
    assert got == list(range(60))
    assert 0.003 < handoff.mean_invoke_s < 0.05
    # the decoder slept until the invoke's expected end instead of waiting to be woken (mostly;
    # the bound leaves room for a loaded CI machine, where some naps end before the invoke does)
    assert handoff.napped >= 15, (handoff.napped, handoff.blocked)
    late.sort()
    assert late[len(late) // 2] < 0.003, "a nap must end near the invoke's end, not a frame later"


def test_slow_model_uses_the_ordinary_blocking_handoff() -> None:
    handoff: InvokeHandoff[int] = InvokeHandoff(fast_invoke_s=0.001)
    got, _ = _run(handoff, items=20, invoke_s=0.004, decode_s=0.0)
    assert got == list(range(20))
    assert handoff.napped == 0
    assert handoff.blocked >= 20


def test_close_ends_the_decoder_after_everything_queued() -> None:
    handoff: InvokeHandoff[str] = InvokeHandoff()
    for name in ("a", "b"):
        handoff.invoking()
        handoff.put(name)
    handoff.close()
    assert [handoff.get(), handoff.get(), handoff.get()] == ["a", "b", None]
