"""The trial of a swapped-in model, and the way back when it fails.

After the swap the new model serves real frames while the old one stays loaded and armed as
the pipeline's fallback. The trial passes when the new model has served ``trial_frames``
frames over at least ``trial_s`` seconds without failing on a frame and its inference p50
is within ``latency_factor`` x (+ ``latency_slack_ms``) of the old model's.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from agent.ota.errors import TrialError
from agent.ota.watch import ResultWatch, model_key

if TYPE_CHECKING:
    import threading

    from agent.config import UpdateConfig
    from agent.detector import Detector
    from agent.pipeline import Pipeline

log = logging.getLogger("agent.ota")

POLL_S = 0.05


class Stopped(Exception):
    """The agent is stopping: the update ends as a (retryable) rollback."""


def run_trial(
    pipeline: Pipeline,
    watch: ResultWatch,
    cfg: UpdateConfig,
    stop: threading.Event,
    *,
    old_key: str,
    new_key: str,
    since: float,
) -> dict[str, Any]:
    """Watch the new model serve until the trial passes; raise :class:`TrialError` or :class:`Stopped`."""
    reference = watch.invoke_p50(old_key)
    t0 = time.monotonic()
    while True:
        if stop.is_set() or pipeline.stopping:
            raise Stopped("the agent is stopping during the trial")
        if pipeline.model_failure is not None:
            exc = pipeline.model_failure
            raise TrialError(f"the new model failed on a frame: {type(exc).__name__}: {exc}", "model_error")
        if pipeline.detector is not None and model_key(pipeline.detector) != new_key:
            raise TrialError("the pipeline stopped running the new model", "model_error")
        frames = watch.count(new_key, since)
        elapsed = time.monotonic() - t0
        if frames >= cfg.trial_frames and elapsed >= cfg.trial_s:
            break
        if elapsed > cfg.trial_timeout_s:
            raise TrialError(f"only {frames} of {cfg.trial_frames} trial frames in {elapsed:.0f} s", "trial_timeout")
        time.sleep(POLL_S)
    p50 = watch.invoke_p50(new_key, since)
    allowed = None if reference is None else reference * cfg.latency_factor + cfg.latency_slack_ms
    if allowed is not None and p50 is not None and p50 > allowed:
        raise TrialError(
            f"inference p50 {p50:.2f} ms on trial vs {reference:.2f} ms before (allowed {allowed:.2f} ms)", "too_slow"
        )
    return {
        "frames": frames,
        "seconds": round(time.monotonic() - t0, 2),
        "invoke_p50_ms": p50,
        "reference_invoke_p50_ms": reference,
    }


def revert(pipeline: Pipeline, watch: ResultWatch, old: Detector, candidate: Detector) -> None:
    """Back to the old model (the pipeline may already have fallen back on its own)."""
    pipeline.arm_fallback(None)
    t = time.monotonic()
    if pipeline.detector is not old or pipeline.swap_pending:
        pipeline.swap_detector(old)
        if not pipeline.stopping:
            watch.wait_for(model_key(old), t, 10.0)
    if pipeline.detector is old:
        candidate.close()
    else:  # the pipeline is not running frames: leave the candidate for the process to reclaim
        log.warning("could not confirm the old model is serving again")
