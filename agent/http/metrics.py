"""``/metrics``: the MQTT telemetry's figures in the Prometheus text format.

Built at scrape time from the same sources as the MQTT telemetry (the pipeline's counters, a
:class:`~agent.telemetry.TelemetryCollector` for memory, SoC, disk and outbox) and the
pipeline's cumulative latency histograms, re-bucketed onto fixed Prometheus buckets. A sample is
counted under the first Prometheus bucket at or above its ~2 % wide log bucket's upper edge, so a
bucket may undercount by samples within 2 % of its bound.

Everything that moves is a counter since start (frames, CPU seconds, messages): rates are
Prometheus' job (``rate(edge_agent_frames_processed_total[1m])`` is the inference fps), so any
number of scrapers see the same figures and none disturbs another. prometheus_client's process
and platform collectors add the standard ``process_*`` and ``python_info`` series. The model and
the build are each one ``*_info`` series (value 1, identity in the labels); other series carry
only the model's name and version, so a new model's sha256 starts no new histogram series.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from agent import __version__, sysinfo
from agent.stats import _EDGES  # the log-bucket upper edges, in ms
from agent.telemetry import TelemetryCollector, TelemetrySnapshot

if TYPE_CHECKING:
    from agent.pipeline import Pipeline

PREFIX = "edge_agent"
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc/stat counts jiffies
# seconds; camera frames take ~1 ms .. ~1 s per stage on a Pi
BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _cumulative(counts: list[int], bounds_s: tuple[float, ...]) -> list[tuple[str, float]]:
    """Prometheus ``(le, cumulative count)`` pairs from per-log-bucket counts."""
    out: list[tuple[str, float]] = []
    i, running = 0, 0
    for bound in bounds_s:
        limit_ms = bound * 1000.0
        while i < len(_EDGES) and _EDGES[i] <= limit_ms:
            running += counts[i]
            i += 1
        out.append((repr(bound), float(running)))
    out.append(("+Inf", float(sum(counts))))
    return out


class AgentMetrics(Collector):
    """A prometheus-client collector reading the live pipeline on each scrape."""

    def __init__(self, pipeline: Pipeline, telemetry: TelemetryCollector, http_counts: Callable[[], dict[str, int]]) -> None:
        self._pipeline = pipeline
        self._telemetry = telemetry
        self._http_counts = http_counts
        self._lock = threading.Lock()  # a TelemetryCollector's window is not safe for concurrent scrapes

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        with self._lock:
            snap = self._telemetry.collect()
        yield _build_info()
        yield from _from_snapshot(snap)
        busy = sysinfo.cpu_times().system_busy
        if busy is not None:
            yield _counter("system_cpu_seconds", "Busy CPU seconds of the machine (all cores) since boot.", busy / _CLK_TCK)
        model = snap.model
        labels = [model.name, model.version] if model else ["", ""]
        hist = HistogramMetricFamily(
            f"{PREFIX}_stage_latency_seconds",
            "Per-frame time spent in each pipeline stage, since start.",
            labels=["stage", "model_name", "model_version"],
        )
        for stage, h in self._pipeline.stats.latency.items():
            counts = h.bucket_counts()
            hist.add_metric([stage, *labels], _cumulative(counts, BUCKETS_S), sum_value=h.total / 1000.0)
        yield hist
        req = CounterMetricFamily(f"{PREFIX}_http_detect_requests", "POST /v1/detect requests by outcome.", labels=["outcome"])
        for outcome, n in self._http_counts().items():
            req.add_metric([outcome], n)
        yield req


def _build_info() -> GaugeMetricFamily:
    import platform

    g = GaugeMetricFamily(f"{PREFIX}_build_info", "The agent build running now (labels); always 1.", labels=["version", "python"])
    g.add_metric([__version__, platform.python_version()], 1.0)
    return g


def _gauge(name: str, doc: str, value: float | None, labels: dict[str, str] | None = None) -> Iterator[GaugeMetricFamily]:
    if value is None:
        return  # unknown (e.g. no SoC sensor off-Pi) is absent, never 0
    g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels or {}))
    g.add_metric(list((labels or {}).values()), float(value))
    yield g


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=float(value))


def _from_snapshot(s: TelemetrySnapshot) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    m = s.model
    if m is not None:
        info = {"model_name": m.name, "model_version": m.version, "model_sha256": m.sha256 or ""}
        yield from _gauge("model_info", "The model running now (labels); always 1.", 1, info)
    yield from _gauge("uptime_seconds", "Seconds since the pipeline started.", s.uptime_s)
    yield _counter("frames_captured", "Frames delivered by the source since start; rate() is the source fps.", s.frames.captured)
    yield _counter("frames_processed", "Frames the model processed since start; rate() is the inference fps.", s.frames.processed)
    yield _counter("frames_dropped", "Frames inference never saw since start.", s.frames.dropped)
    yield _counter("sink_errors", "Sink failures since start.", s.sink_errors)
    yield from _gauge("cpu_cores", "Online CPU cores.", s.cpu.cores)
    yield from _gauge("load_1m", "1-minute load average.", s.cpu.load_1m)
    yield from _gauge("memory_available_bytes", "MemAvailable of the machine.", s.memory.available_bytes)
    yield from _gauge("soc_temperature_celsius", "SoC temperature.", s.soc.temperature_c)
    if s.soc.throttled is not None:
        g = GaugeMetricFamily(f"{PREFIX}_throttled", "Raspberry Pi get_throttled flags (1 = set).", labels=["flag"])
        for flag, v in s.soc.throttled.items():
            if flag != "raw":
                g.add_metric([flag], float(bool(v)))
        yield g
        yield from _gauge("throttled_raw", "The raw get_throttled word.", float(s.soc.throttled.get("raw", 0)))
    yield from _gauge("state_dir_free_bytes", "Free bytes on the state directory's filesystem.", s.disk.state_dir_free_bytes)
    t = s.transport
    if t is not None:
        yield from _gauge("mqtt_connected", "1 when connected to the broker.", float(t.connected))
        yield _counter("mqtt_reconnects", "Successful reconnects since start.", t.reconnects)
        yield from _gauge("outbox_rows", "Messages waiting in the durable outbox.", t.outbox_rows)
        yield from _gauge("outbox_bytes", "Payload bytes waiting in the outbox.", t.outbox_bytes)
        yield from _gauge("outbox_oldest_age_seconds", "Age of the oldest waiting message.", t.outbox_oldest_age_s)
        yield _counter("mqtt_published", "Messages handed to the broker connection since start.", t.published)
        yield _counter("mqtt_acknowledged", "Messages the broker acknowledged since start.", t.acknowledged)
        yield _counter(
            "mqtt_acknowledged_detections",
            "Detection messages the broker acknowledged since start; rate() is the published fps.",
            t.acknowledged_detections,
        )
        yield _counter(
            "mqtt_published_unpersisted", "Messages published without durability (outbox write failed).", t.published_unpersisted
        )
        yield _counter("outbox_write_failures", "Outbox writes that failed (disk full, I/O error).", t.outbox_write_failures)
        dropped = CounterMetricFamily(f"{PREFIX}_mqtt_dropped", "Messages lost since start, by reason.", labels=["reason"])
        for reason, n in t.dropped.items():
            dropped.add_metric([reason], n)
        yield dropped


def register_standard_collectors(registry: CollectorRegistry) -> None:
    """prometheus_client's process (CPU seconds, RSS, fds, start time) and platform (python_info) collectors."""
    from prometheus_client import PlatformCollector, ProcessCollector

    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
