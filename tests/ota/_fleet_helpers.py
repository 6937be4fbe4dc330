"""Payloads shaped exactly like a device's, built with the agent's own pydantic models (stand-ins for real agents)."""

from __future__ import annotations

import itertools
from typing import Any

from agent.schema import ModelRef
from agent.sinks.mqtt.payloads import EventMessage, StatusMessage, TelemetryMessage
from agent.telemetry import Cpu, Disk, Fps, Frames, Memory, Soc, StageLatency, TelemetrySnapshot, UpdateState

_seq = itertools.count(1)


def status_payload(
    device_id: str,
    at: float,
    *,
    root: str = "edge",
    model: tuple[str, str] | None = ("ssd", "1.0.0"),
    update: dict[str, Any] | None = None,
    state: str = "running",
) -> bytes:
    """The retained ``<prefix>/status``, as published at wall clock ``at``."""
    msg = StatusMessage(
        device_id=device_id,
        state=state,
        started_at=at - 120.0,
        uptime_s=120.0,
        model=ModelRef(name=model[0], version=model[1], sha256="ab" * 32) if model else None,
        update=UpdateState(**(update or {"state": "idle", "since": at - 60.0})),
        publish_policy="with_detections",
        topic_prefix=f"{root}/{device_id}",
    )
    return msg.model_dump_json().encode()


def telemetry_payload(
    device_id: str,
    at: float,
    *,
    fps: float | None = 14.5,
    capture_p95: float | None = 80.0,
    capture_stage: bool = True,
    invoke_p95: float | None = 40.0,
    temperature_c: float | None = 52.3,
    window_s: float = 30.0,
    model: tuple[str, str] | None = None,
) -> bytes:
    latency = {"invoke": StageLatency(p50=30.0, p95=invoke_p95, count=100)}
    if capture_stage:  # p95 None: the stage had no samples this window
        latency["capture_to_result"] = StageLatency(p50=60.0, p95=capture_p95, count=100)
    snapshot = TelemetrySnapshot(
        time=at,
        uptime_s=600.0,
        window_s=window_s,
        model=ModelRef(name=model[0], version=model[1]) if model else None,
        fps=Fps(source=15.0, inference=fps),
        frames=Frames(captured=9000, processed=8700, dropped=300, dropped_window=2),
        latency_ms=latency,
        cpu=Cpu(process_percent=180.0, system_percent=50.0, cores=4, load_1m=2.1),
        memory=Memory(rss_bytes=200_000_000, available_bytes=1_000_000_000),
        soc=Soc(temperature_c=temperature_c),
        disk=Disk(state_dir_free_bytes=10_000_000_000),
        sink_errors=0,
    )
    seq = next(_seq)
    msg = TelemetryMessage(msg_id=f"{device_id}/o1/{seq}", seq=seq, device_id=device_id, queued_at=at, telemetry=snapshot)
    return msg.model_dump_json().encode()


def event_payload(device_id: str, at: float, event: str, data: dict[str, Any]) -> bytes:
    seq = next(_seq)
    msg = EventMessage(msg_id=f"{device_id}/o1/{seq}", seq=seq, device_id=device_id, queued_at=at, event=event, data=data)
    return msg.model_dump_json().encode()
