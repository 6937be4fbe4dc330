"""What ``edge-agent bench-ota`` reads off the broker, folded into per-agent results: the pure core.

:class:`OtaWatch` takes the agents' messages one at a time (no broker, no clock of its own) and
:func:`summarize` turns the per-agent results into the figures the benchmark prints and judges.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.ota.fleet import FleetView

TARGET_GAP_RATIO = 2.0  # a swap may cost at most two frame intervals between results
WARMUP_RESULTS = 20  # ModelUpdater._loop waits for this many results before it acts on a trigger
TERMINAL = ("committed", "failed", "rolled_back", "not_updated")


@dataclass
class AgentResult:
    """One agent's update, as its events told it; times are seconds after the publish."""

    device_id: str
    outcome: str | None = None  # a TERMINAL phase, None while it has not finished
    commit_s: float | None = None
    swap_gap_ms: float | None = None
    frame_interval_ms: float | None = None
    reason: str | None = None
    detail: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # first time each phase was reported
    # the pre-swap self-test of a committed update: candidate's median invoke vs the serving model's, same seconds
    selftest_invoke_ms: float | None = None
    selftest_reference_ms: float | None = None

    @property
    def gap_ratio(self) -> float | None:
        if self.swap_gap_ms is None or not self.frame_interval_ms:
            return None
        return self.swap_gap_ms / self.frame_interval_ms

    def as_dict(self) -> dict[str, Any]:
        ratio = self.gap_ratio
        return {**asdict(self), "gap_ratio": None if ratio is None else round(ratio, 3)}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


class OtaWatch:
    """The bench agents' MQTT messages folded: readiness before the publish, update phases after it.

    Pure (the shell passes the receive time and does the locking). Status and availability go through
    :class:`FleetView`, the same reading ``edge-fleet`` does; telemetry's processed-frame count and the
    ``update`` events' measurements, which FleetView does not keep, are read here.
    """

    def __init__(self, device_ids: list[str], launched_at: float, topic_root: str = "edge") -> None:
        self.view = FleetView(topic_root)
        self.topic_root = topic_root
        self.launched_at = launched_at  # wall clock: anything older is a previous run's retained message
        self.processed = dict.fromkeys(device_ids, 0)
        self.started = dict.fromkeys(device_ids, False)  # a status of this run says running, its updater idle
        self.agents = {d: AgentResult(d) for d in device_ids}
        self.published_at: float | None = None

    def subscriptions(self) -> list[str]:
        return [f"{self.topic_root}/{d}/{s}" for d in self.agents for s in ("status", "availability", "telemetry", "events")]

    def ingest(self, topic: str, payload: bytes, now: float, *, retained: bool = False) -> None:
        device, _, suffix = topic.removeprefix(self.topic_root + "/").partition("/")
        if device not in self.agents or not payload:
            return
        self.view.ingest(topic, payload, now, retained=retained)
        if suffix not in ("status", "telemetry", "events"):
            return
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            return  # FleetView counted it as malformed
        if not isinstance(doc, dict):
            return
        if suffix == "status":  # FleetView keeps no start time: an old retained status would look current
            update, started_at = doc.get("update"), _num(doc.get("started_at"))
            self.started[device] = (
                doc.get("state") == "running"
                and started_at is not None
                and started_at >= self.launched_at
                and isinstance(update, dict)
                and update.get("state") == "idle"
            )
        elif suffix == "telemetry":
            t = doc.get("telemetry")
            frames = t.get("frames") if isinstance(t, dict) else None
            if not isinstance(t, dict) or not isinstance(frames, dict):
                return
            at, processed = _num(t.get("time")), _num(frames.get("processed"))
            if at is not None and processed is not None and at >= self.launched_at:
                self.processed[device] = max(self.processed[device], int(processed))
        elif doc.get("event") == "update" and isinstance(doc.get("data"), dict):
            self._update(self.agents[device], doc["data"], _num(doc.get("queued_at")) or now)

    def _update(self, agent: AgentResult, data: dict[str, Any], at: float) -> None:
        phase = data.get("phase")
        if self.published_at is None or at < self.published_at or not isinstance(phase, str) or agent.outcome is not None:
            return  # start-up reports, or after the agent's outcome is known
        since = round(at - self.published_at, 3)
        agent.phases.setdefault(phase, since)
        if phase == "idle" and data.get("reason"):  # it looked and decided not to install (rollout, policy)
            phase = "not_updated"
        if phase not in TERMINAL:
            return
        agent.outcome = phase
        agent.reason, agent.detail = data.get("reason"), data.get("detail")
        if phase == "committed":
            agent.commit_s = since
            agent.swap_gap_ms, agent.frame_interval_ms = _num(data.get("swap_gap_ms")), _num(data.get("frame_interval_ms"))
            selftest = data.get("selftest")
            if isinstance(selftest, dict):
                agent.selftest_invoke_ms = _num(selftest.get("latency_p50_ms"))
                agent.selftest_reference_ms = _num(selftest.get("reference_latency_ms"))

    def ready(self) -> list[str]:
        """Agents that run, are online, report an idle updater and have processed the updater's warm-up frames."""
        out = []
        for device_id, processed in self.processed.items():
            row = self.view.devices.get(device_id)
            if self.started[device_id] and row is not None and row.online and processed >= WARMUP_RESULTS:
                out.append(device_id)
        return out

    def pending(self) -> list[str]:
        return [d for d, a in self.agents.items() if a.outcome is None]

    def last_state(self, device_id: str) -> str:
        row = self.view.devices.get(device_id)
        return (row.update_state or "-") if row is not None else "never reported"


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least q % of the values at or below it."""
    if not values:
        return None
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]


def _round(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v, digits)


def summarize(agents: list[AgentResult]) -> dict[str, Any]:
    """The headline numbers, and whether the run passes: every agent committed, every gap <= 2 frame intervals."""
    committed = [a for a in agents if a.outcome == "committed"]
    times = [a.commit_s for a in committed if a.commit_s is not None]
    gaps = [a.swap_gap_ms for a in committed if a.swap_gap_ms is not None]
    ratios = [r for a in committed if (r := a.gap_ratio) is not None]
    intervals = [a.frame_interval_ms for a in committed if a.frame_interval_ms is not None]
    max_ratio = max(ratios) if ratios else None
    unmeasured = len(committed) - len(ratios)

    return {
        "agents": len(agents),
        "committed": len(committed),
        "failed": sum(1 for a in agents if a.outcome is not None and a.outcome != "committed"),
        "no_answer": sum(1 for a in agents if a.outcome is None),
        "commit_s": {
            "first": _round(min(times, default=None)),
            "p50": _round(statistics.median(times) if times else None),
            "p95": _round(_percentile(times, 95)),
            "last": _round(max(times, default=None)),
        },
        "swap_gap_ms": {
            "p50": _round(_percentile(gaps, 50)),
            "p95": _round(_percentile(gaps, 95)),
            "max": _round(max(gaps, default=None)),
        },
        "frame_interval_ms_p50": _round(_percentile(intervals, 50)),
        "gap_ratio": {"p50": _round(_percentile(ratios, 50), 3), "max": _round(max_ratio, 3)},
        "gap_unmeasured": unmeasured,
        "selftest_invoke_ms_p50": _round(_percentile([x for a in committed if (x := a.selftest_invoke_ms) is not None], 50)),
        "selftest_reference_ms_p50": _round(
            _percentile([x for a in committed if (x := a.selftest_reference_ms) is not None], 50)
        ),
        "passed": bool(agents)
        and len(committed) == len(agents)
        and unmeasured == 0
        and max_ratio is not None
        and max_ratio <= TARGET_GAP_RATIO,
    }
