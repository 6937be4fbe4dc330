"""The fleet's state from the devices' own MQTT topics: a pure fold, no I/O (``edge-fleet`` renders it).

:class:`FleetView` folds ``(topic, payload)`` messages from ``<root>/+/status`` (retained),
``/availability`` (retained), ``/telemetry`` and ``/events`` into one :class:`DeviceRow` per
device, so it is tested message by message. Payloads are read leniently rather than through the
agent's ``extra="forbid"`` models, so a newer agent that adds fields still shows up; anything
unreadable is counted and skipped.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agent.ota.versions import compare_versions

log = logging.getLogger("agent.ota.fleet_cli")  # one logger for edge-fleet, core and shell


SUFFIXES = ("status", "availability", "telemetry", "events")
RESERVED_DEVICE_IDS = frozenset({"fleet"})  # <root>/fleet/updates is the registry's notification, not a device
STALE_INTERVALS = 3  # a device is stale after missing this many telemetry intervals...
STALE_DEFAULT_S = 60.0  # ...or after this long when its interval is not known yet
UPDATING_STATES = frozenset({"checking", "downloading", "verifying", "staged"})
FAILED_STATES = frozenset({"failed", "rolled_back"})
LATENCY_STAGES = ("capture_to_result", "invoke")  # p95 of the first stage present
BUCKETS = ("committed", "trial", "failed", "updating", "other_version", "other_model", "offline")  # of a rollout


class Malformed(ValueError):
    """A payload that cannot be read; the reason goes to the debug log."""


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    return str(v) if _num(v) is not None else None


def same_version(a: str | None, b: str) -> bool:
    """Versions compare numerically (``1.2`` == ``1.2.0``); anything unparsable compares as text."""
    if a is None:
        return False
    try:
        return compare_versions(a, b) == 0
    except ValueError:
        return a == b


@dataclass
class DeviceRow:
    """What the fleet knows about one device; ``None`` = not reported (yet)."""

    device_id: str
    online: bool | None = None
    agent_state: str | None = None
    model: str | None = None
    version: str | None = None
    update_state: str | None = None
    update_model: str | None = None
    update_version: str | None = None
    update_progress: float | None = None
    update_reason: str | None = None
    update_detail: str | None = None
    fps: float | None = None
    p95_ms: float | None = None
    latency_stage: str | None = None
    temperature_c: float | None = None
    telemetry_interval_s: float | None = None
    last_seen: float | None = None
    # wall clock of the message each part came from: an older message never overwrites a newer one
    model_at: float = field(default=-math.inf, repr=False)
    update_at: float = field(default=-math.inf, repr=False)
    telemetry_at: float = field(default=-math.inf, repr=False)

    def age_s(self, now: float) -> float | None:
        return None if self.last_seen is None else max(now - self.last_seen, 0.0)

    def stale(self, now: float) -> bool:
        """Not heard from in 3 telemetry intervals (60 s while the interval is unknown); offline is not stale."""
        age = self.age_s(now)
        limit = STALE_INTERVALS * self.telemetry_interval_s if self.telemetry_interval_s else STALE_DEFAULT_S
        return self.online is not False and (age is None or age > limit)

    def seen(self, at: float) -> None:
        self.last_seen = at if self.last_seen is None else max(self.last_seen, at)

    def as_dict(self, now: float) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if not k.endswith("_at")}
        age = self.age_s(now)
        return {**doc, "age_s": None if age is None else round(age, 1), "stale": self.stale(now)}


@dataclass
class RolloutSummary:
    """Where every device stands for ``model`` at ``version``; each device is in exactly one bucket."""

    model: str
    version: str
    devices: dict[str, list[str]] = field(default_factory=dict)  # bucket -> device ids
    reasons: Counter[str] = field(default_factory=Counter)  # failed / rolled back, by reason code
    other_versions: Counter[str] = field(default_factory=Counter)  # version of `model` -> devices on it

    def count(self, bucket: str) -> int:
        return len(self.devices.get(bucket, []))

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.devices.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "total": self.total,
            "counts": {b: self.count(b) for b in BUCKETS},
            "reasons": dict(self.reasons),
            "other_versions": dict(self.other_versions),
            "devices": {b: sorted(self.devices.get(b, [])) for b in BUCKETS},
        }


class FleetView:
    """Folds the devices' messages into rows. Pure: no clock, no I/O; not thread-safe (the shell locks)."""

    def __init__(self, topic_root: str = "edge") -> None:
        self.topic_root = topic_root
        self.devices: dict[str, DeviceRow] = {}
        self.malformed: Counter[str] = Counter()  # by topic suffix

    def subscriptions(self) -> list[str]:
        return [f"{self.topic_root}/+/{s}" for s in SUFFIXES]

    def rows(self) -> list[DeviceRow]:
        return [self.devices[k] for k in sorted(self.devices)]

    def ingest(self, topic: str, payload: bytes, now: float, *, retained: bool = False) -> bool:
        """Apply one message received at ``now``; False when it was ignored or malformed (never raises)."""
        head = self.topic_root + "/"
        parts = topic[len(head) :].split("/") if topic.startswith(head) else []
        if len(parts) != 2 or not parts[0] or parts[0] in RESERVED_DEVICE_IDS or parts[1] not in SUFFIXES:
            return False
        if not payload:  # a cleared retained message
            return False
        device_id, suffix = parts
        try:
            if suffix == "availability":
                self._availability(device_id, payload, now, retained)
                return True
            try:
                doc = json.loads(payload)
            except (ValueError, RecursionError) as exc:
                raise Malformed(f"not JSON ({exc})") from None
            if not isinstance(doc, dict):
                raise Malformed(f"expected a JSON object, got {type(doc).__name__}")
            getattr(self, f"_{suffix}")(device_id, doc, None if retained else now)
        except (ValueError, TypeError, AttributeError) as exc:  # Malformed, bad UTF-8; never kill paho's thread
            self.malformed[suffix] += 1
            log.debug("skipping malformed payload on %s: %s", topic, exc)
            return False
        return True

    def _row(self, device_id: str) -> DeviceRow:
        return self.devices.setdefault(device_id, DeviceRow(device_id))

    def _availability(self, device_id: str, payload: bytes, now: float, retained: bool) -> None:
        text = payload.decode().strip()
        if text not in ("online", "offline"):
            raise Malformed(f"availability must be 'online' or 'offline', got {text[:40]!r}")
        row = self._row(device_id)
        row.online = text == "online"
        if not retained:  # a retained one carries no time: it may be days old
            row.seen(now)

    def _status(self, device_id: str, doc: dict[str, Any], received: float | None) -> None:
        model, update = doc.get("model"), doc.get("update")
        if model is not None and not isinstance(model, dict):
            raise Malformed("'model' must be an object or null")
        if update is not None and not isinstance(update, dict):
            raise Malformed("'update' must be an object")
        started, uptime = _num(doc.get("started_at")), _num(doc.get("uptime_s"))
        at = started + uptime if started is not None and uptime is not None else received
        row = self._row(device_id)
        row.agent_state = _text(doc.get("state")) or row.agent_state
        if at is not None:
            row.seen(at)
        stamp = at if at is not None else -math.inf
        if stamp >= row.model_at:
            row.model, row.version = (_text(model.get("name")), _text(model.get("version"))) if model else (None, None)
            row.model_at = stamp
        if update:
            self._update(row, update, _num(update.get("since")) or stamp, state_key="state")

    def _update(self, row: DeviceRow, data: dict[str, Any], at: float, state_key: str) -> None:
        state = _text(data.get(state_key))
        if state is None or at < row.update_at:
            return
        row.update_at = at
        row.update_state = state
        row.update_model = _text(data.get("model"))
        row.update_version = _text(data.get("version"))
        row.update_progress = _num(data.get("progress"))
        row.update_reason = _text(data.get("reason"))
        row.update_detail = _text(data.get("detail"))

    def _telemetry(self, device_id: str, doc: dict[str, Any], received: float | None) -> None:
        t = doc.get("telemetry")
        if not isinstance(t, dict):
            raise Malformed("'telemetry' must be an object")
        at = _num(t.get("time"))
        at = at if at is not None else received
        row = self._row(device_id)
        if at is not None:
            row.seen(at)
        stamp = at if at is not None else -math.inf
        if stamp < row.telemetry_at:
            return
        row.telemetry_at = stamp
        fps, soc, latency = t.get("fps"), t.get("soc"), t.get("latency_ms")
        row.fps = _num(fps.get("inference")) if isinstance(fps, dict) else None
        row.temperature_c = _num(soc.get("temperature_c")) if isinstance(soc, dict) else None
        row.p95_ms = row.latency_stage = None
        for stage in LATENCY_STAGES:
            stats = latency.get(stage) if isinstance(latency, dict) else None
            p95 = _num(stats.get("p95")) if isinstance(stats, dict) else None
            if p95 is not None:
                row.p95_ms, row.latency_stage = p95, stage
                break
        row.telemetry_interval_s = _num(t.get("window_s")) or row.telemetry_interval_s
        model = t.get("model")
        if isinstance(model, dict) and stamp >= row.model_at:
            row.model, row.version, row.model_at = _text(model.get("name")), _text(model.get("version")), stamp

    def _events(self, device_id: str, doc: dict[str, Any], received: float | None) -> None:
        event, data = doc.get("event"), doc.get("data", {})
        if not isinstance(event, str) or not isinstance(data, dict):
            raise Malformed("an event needs a string 'event' and an object 'data'")
        at = _num(doc.get("queued_at")) or _num(doc.get("time")) or received
        row = self._row(device_id)
        if at is not None:
            row.seen(at)
        stamp = at if at is not None else -math.inf
        if event == "update":
            self._update(row, data, stamp, state_key="phase")
        elif event == "model_changed" and stamp >= row.model_at:
            row.model, row.version, row.model_at = _text(data.get("name")), _text(data.get("version")), stamp

    def rollout(self, model: str, version: str) -> RolloutSummary:
        """Which devices run ``model`` at ``version`` committed, in trial, failed for it, updating to it, elsewhere."""
        summary = RolloutSummary(model, version)
        for row in self.rows():
            target = row.update_model in (None, model) and (
                same_version(row.update_version, version)
                or (row.update_version is None and row.model == model and same_version(row.version, version))
            )
            running = row.model == model and same_version(row.version, version)
            if row.online is False:
                bucket = "offline"
            elif row.update_state == "trial" and target:
                bucket = "trial"
            elif running and row.update_state != "trial":
                bucket = "committed"
            elif row.update_state in FAILED_STATES and target:
                bucket = "failed"
                summary.reasons[row.update_reason or "unknown"] += 1
            elif row.update_state in UPDATING_STATES and target:
                bucket = "updating"
            elif row.model == model:
                bucket = "other_version"
                summary.other_versions[row.version or "unknown"] += 1
            else:
                bucket = "other_model"
            summary.devices.setdefault(bucket, []).append(row.device_id)
        return summary
