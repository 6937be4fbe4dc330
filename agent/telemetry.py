"""The agent's telemetry snapshot and status, independent of any transport.

The MQTT sink publishes :class:`TelemetrySnapshot` on ``<prefix>/telemetry`` and
:class:`AgentStatus` (retained) on ``<prefix>/status``; the local HTTP API (Prometheus
``/metrics``, ``/v1/status``) reuses the same models and the same collector.

Latency percentiles are per window (since the previous snapshot of the same collector),
computed from the pipeline's bounded log-bucket histograms by diffing bucket counts: no
sample lists, constant memory however long the agent runs. Each consumer owns its own
:class:`TelemetryCollector`, so a 2 s status file and a 30 s MQTT interval don't share a window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agent import __version__, sysinfo
from agent.schema import ModelRef
from agent.stats import LatencyHistogram, window_summary

if TYPE_CHECKING:
    from agent.pipeline import PipelineStats

TELEMETRY_SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageLatency(_Model):
    """Percentiles of one stage over the window, in ms (upper edge of a ~2 % wide bucket)."""

    p50: float | None = Field(None, description="Median, ms; None when the window had no samples.")
    p95: float | None = Field(None, description="95th percentile, ms.")
    p99: float | None = Field(None, description="99th percentile, ms.")
    max: float | None = Field(None, description="Largest sample's bucket, ms.")
    count: int = Field(0, description="Samples in the window.")


class Fps(_Model):
    source: float | None = Field(None, description="Frames the camera/source delivered per second.")
    inference: float | None = Field(None, description="Frames the model processed per second.")
    published: float | None = Field(
        None, description="Detection messages the broker acknowledged per second (None: no transport)."
    )


class Frames(_Model):
    captured: int = Field(description="Frames delivered by the source since start.")
    processed: int = Field(description="Frames the model processed since start.")
    dropped: int = Field(description="Frames inference never saw since start (newest-frame slot, lost ticks).")
    dropped_window: int = Field(description="Of those, dropped during this window.")


class Cpu(_Model):
    process_percent: float | None = Field(None, description="This process; 100 = one core fully busy.")
    system_percent: float | None = Field(None, description="The whole machine, 0..100 over all cores.")
    cores: int = Field(description="Online CPU cores.")
    load_1m: float | None = Field(None, description="1-minute load average.")


class Memory(_Model):
    rss_bytes: int | None = Field(None, description="Resident set size of the agent.")
    available_bytes: int | None = Field(None, description="MemAvailable of the machine.")


class Soc(_Model):
    temperature_c: float | None = Field(None, description="SoC temperature (°C) from sysfs; None off-Pi.")
    throttled: dict[str, bool | int] | None = Field(
        None, description="Decoded get_throttled word (raw plus one flag per bit); None where the node is absent."
    )


class Disk(_Model):
    state_dir_free_bytes: int | None = Field(None, description="Free bytes on the filesystem holding the state directory.")


class TransportTelemetry(_Model):
    """What a store-and-forward transport (the MQTT sink) reports about itself."""

    connected: bool = Field(description="Connected to the broker now.")
    reconnects: int = Field(description="Successful connects after the first one.")
    outbox_rows: int = Field(description="Messages waiting in the durable outbox (not yet acknowledged).")
    outbox_bytes: int = Field(description="Payload bytes in the outbox.")
    outbox_oldest_age_s: float | None = Field(None, description="Age of the oldest waiting message.")
    published: int = Field(description="Messages handed to the broker connection since start.")
    acknowledged: int = Field(description="Messages the broker acknowledged (and the outbox deleted) since start.")
    acknowledged_detections: int = Field(description="Of those, detection messages.")
    published_unpersisted: int = Field(
        0, description="Messages published without durability since start (the outbox could not store them: disk full)."
    )
    outbox_write_failures: int = Field(0, description="Outbox writes that failed since start (disk full, I/O error).")
    dropped: dict[str, int] = Field(
        description="Messages lost since start, by reason: telemetry/detection/event (outbox full), expired (too old), "
        "handoff (writer queue full), write_error (outbox write failed), rejected (broker refused)."
    )
    capture_to_ack_ms: StageLatency = Field(
        default_factory=StageLatency, description="Capture to broker acknowledgement of detection messages, this window."
    )


class TelemetrySnapshot(_Model):
    """One telemetry sample; published every ``telemetry_interval_s``."""

    schema_version: int = TELEMETRY_SCHEMA_VERSION
    time: float = Field(description="Wall clock, Unix seconds.")
    uptime_s: float = Field(description="Seconds since the pipeline started.")
    window_s: float = Field(description="Length of the window rates and percentiles cover.")
    model: ModelRef | None = Field(None, description="The model running now.")
    fps: Fps
    frames: Frames
    latency_ms: dict[str, StageLatency] = Field(
        description="Per pipeline stage (wait, preprocess, invoke, decode, sink, overhead, capture_to_result), this window."
    )
    cpu: Cpu
    memory: Memory
    soc: Soc
    disk: Disk
    sink_errors: int = Field(description="Sink failures since start (each logged).")
    transport: TransportTelemetry | None = Field(None, description="Broker connection and outbox; None without one.")


class UpdateState(_Model):
    """Where the model updater stands (OTA); ``not_available`` until an updater is wired in."""

    state: str = Field(
        "not_available",
        description="not_available, idle, checking, downloading, verifying, staged, trial, committed, rolled_back, failed.",
    )
    detail: str | None = Field(None, description="Human-readable detail (reason of a failure, progress).")
    since: float | None = Field(None, description="Wall clock when the state was entered.")
    model: str | None = Field(None, description="The model name the update is about.")
    version: str | None = Field(None, description="The version being installed (or last installed/refused).")
    progress: float | None = Field(None, description="Download progress 0..1 while downloading.")
    reason: str | None = Field(None, description="Stable reason code of a failure or rollback (e.g. hash_mismatch).")


class AgentStatus(_Model):
    """The agent's identity and state (retained on ``<prefix>/status``)."""

    device_id: str
    agent_version: str = __version__
    state: str = Field(description="running or stopped.")
    started_at: float = Field(description="Wall clock when the agent started.")
    uptime_s: float
    model: ModelRef | None
    thresholds: dict[str, float | int] | None = Field(None, description="Score/IoU/max detections in force.")
    source: dict[str, Any] = Field(default_factory=dict, description="Source id, type and whether it delivers frames.")
    config_hash: str | None = Field(None, description="sha256 (first 16 hex) of the effective configuration.")
    update: UpdateState = Field(default_factory=UpdateState)


@dataclass
class _Window:
    at: float
    cpu: sysinfo.CpuTimes
    captured: int
    processed: int
    dropped: int
    acked_detections: int
    counts: dict[str, list[int]]


class TelemetryCollector:
    """Builds :class:`TelemetrySnapshot` s from the pipeline's live stats and the machine's /proc and /sys."""

    def __init__(
        self,
        stats: PipelineStats,
        model: Callable[[], ModelRef | None],
        state_dir: Path,
        transport: Callable[[], tuple[TransportTelemetry, LatencyHistogram | None]] | None = None,
        *,
        proc: Path = sysinfo.PROC,
        sys_root: Path = sysinfo.SYS,
    ) -> None:
        self._stats = stats
        self._model = model
        self._state_dir = state_dir
        self._transport = transport
        self._proc = proc
        self._sys = sys_root
        self._throttle_node = sysinfo.find_throttled_node(sys_root)
        self._last = self._sample(None)

    def _sample(self, transport: TransportTelemetry | None, ack_hist: LatencyHistogram | None = None) -> _Window:
        src = self._stats.source.stats
        counts = {name: h.bucket_counts() for name, h in self._stats.latency.items()}
        if ack_hist is not None:
            counts["capture_to_ack"] = ack_hist.bucket_counts()
        return _Window(
            at=time.monotonic(),
            cpu=sysinfo.cpu_times(self._proc),
            captured=src.frames_captured,
            processed=self._stats.frames,
            dropped=src.frames_dropped,
            acked_detections=transport.acknowledged_detections if transport else 0,
            counts=counts,
        )

    def collect(self) -> TelemetrySnapshot:
        """A snapshot covering the time since the previous ``collect`` (or since construction)."""
        transport, ack_hist = self._transport() if self._transport else (None, None)
        now = self._sample(transport, ack_hist)
        prev, self._last = self._last, now
        dt = max(now.at - prev.at, 1e-9)
        latency = {
            name: StageLatency(**_summary(prev.counts.get(name), counts))
            for name, counts in now.counts.items()
            if name != "capture_to_ack"
        }
        if transport is not None and "capture_to_ack" in now.counts:
            transport = transport.model_copy(
                update={
                    "capture_to_ack_ms": StageLatency(**_summary(prev.counts.get("capture_to_ack"), now.counts["capture_to_ack"]))
                }
            )
        process_cpu, system_cpu = sysinfo.cpu_percent(prev.cpu, now.cpu)
        return TelemetrySnapshot(
            time=time.time(),
            uptime_s=time.monotonic() - self._stats.started_monotonic,
            window_s=dt,
            model=self._model(),
            fps=Fps(
                source=(now.captured - prev.captured) / dt,
                inference=(now.processed - prev.processed) / dt,
                published=(now.acked_detections - prev.acked_detections) / dt if transport is not None else None,
            ),
            frames=Frames(
                captured=now.captured, processed=now.processed, dropped=now.dropped, dropped_window=now.dropped - prev.dropped
            ),
            latency_ms=latency,
            cpu=Cpu(process_percent=process_cpu, system_percent=system_cpu, cores=_cores(), load_1m=sysinfo.load_1m()),
            memory=Memory(rss_bytes=sysinfo.rss_bytes(self._proc), available_bytes=sysinfo.mem_available_bytes(self._proc)),
            soc=Soc(temperature_c=sysinfo.soc_temperature_c(self._sys), throttled=sysinfo.throttled_flags(self._throttle_node)),
            disk=Disk(state_dir_free_bytes=sysinfo.free_disk_bytes(self._state_dir)),
            sink_errors=self._stats.sink_errors,
            transport=transport,
        )


def _summary(before: list[int] | None, after: list[int]) -> dict[str, Any]:
    s = window_summary(before if before is not None else [0] * len(after), after)
    return {**s, "count": int(s["count"] or 0)}


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
