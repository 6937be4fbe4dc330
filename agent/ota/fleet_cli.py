"""``edge-fleet``: the fleet's models, updates and health, from the devices' own MQTT topics.

A pure core, :class:`FleetView`, folds ``(topic, payload)`` messages from ``<root>/+/status``
(retained), ``/availability`` (retained), ``/telemetry`` and ``/events`` into one
:class:`DeviceRow` per device; no I/O, so it is tested message by message. The shell below
subscribes with the MQTT tools' client (:func:`agent.sinks.mqtt.client.tool_client`) and
renders rich tables: ``status`` (live, or ``--once``) and ``rollout MODEL VERSION``.

Payloads are read leniently rather than through the agent's ``extra="forbid"`` models, so a
newer agent that adds fields still shows up; anything unreadable is counted and skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from agent.ota.versions import compare_versions, parse_version

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from agent.sinks.mqtt.config import MqttSinkConfig

log = logging.getLogger(__name__)

SUFFIXES = ("status", "availability", "telemetry", "events")
RESERVED_DEVICE_IDS = frozenset({"fleet"})  # <root>/fleet/updates is the registry's notification, not a device
STALE_INTERVALS = 3  # a device is stale after missing this many telemetry intervals...
STALE_DEFAULT_S = 60.0  # ...or after this long when its interval is not known yet
UPDATING_STATES = frozenset({"checking", "downloading", "verifying", "staged"})
FAILED_STATES = frozenset({"failed", "rolled_back"})
LATENCY_STAGES = ("capture_to_result", "invoke")  # p95 of the first stage present
BUCKETS = ("committed", "trial", "failed", "updating", "other_version", "other_model", "offline")  # of a rollout


class UsageError(AgentError):
    """A command-line argument is invalid (exit 2); the message names it."""


class BrokerError(AgentError):
    """The broker cannot be reached or refused the connection (exit 1)."""


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


# ---- rendering ---------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _f(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _update_cell(row: DeviceRow) -> str:
    from rich.markup import escape

    if row.update_state is None:
        return "-"
    text = row.update_state
    if row.update_version and row.update_state not in ("idle", "not_available"):
        text += f" → {row.update_version}" if row.update_state in UPDATING_STATES | {"trial"} else f" {row.update_version}"
    if row.update_progress is not None and row.update_state == "downloading":
        pct = row.update_progress * 100 if row.update_progress <= 1 else row.update_progress  # a fraction, or percent
        text += f" {pct:.0f}%"
    if row.update_reason:
        text += f" ({row.update_reason})"
    style = {"failed": "red", "rolled_back": "red", "trial": "yellow", "committed": "green"}.get(row.update_state)
    return f"[{style}]{escape(text)}[/{style}]" if style else escape(text)


def status_table(rows: list[DeviceRow], now: float, *, title: str = "edge fleet", caption: str | None = None) -> Table:
    """The fleet as a table: offline rows dimmed, stale ones marked."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    table.add_column("device", no_wrap=True)
    for name in ("online", "model", "update"):
        table.add_column(name)
    for name in ("fps", "p95 ms", "temp °C", "last seen"):
        table.add_column(name, justify="right")
    for row in rows:
        online = {True: "[green]online[/green]", False: "offline", None: "?"}[row.online]
        if row.agent_state and row.agent_state != "running":
            online += f" ({escape(row.agent_state)})"
        model = escape(f"{row.model} {row.version or ''}".strip()) if row.model else "-"
        seen = _age(row.age_s(now))
        if row.stale(now):
            seen = f"[yellow]{seen} (stale)[/yellow]"
        p95 = _f(row.p95_ms) + ("" if row.latency_stage in (None, LATENCY_STAGES[0]) else f" ({row.latency_stage})")
        cells = [escape(row.device_id), online, model, _update_cell(row), _f(row.fps), p95, _f(row.temperature_c), seen]
        table.add_row(*cells, style="dim" if row.online is False else None)
    return table


def rollout_table(summary: RolloutSummary) -> Table:
    from rich.markup import escape
    from rich.table import Table

    labels = {
        "committed": f"committed on {summary.version}",
        "trial": "in trial",
        "failed": "failed / rolled back",
        "updating": "updating to it",
        "other_version": f"other {summary.model} versions",
        "other_model": "other models",
        "offline": "offline",
    }
    table = Table(title=f"rollout of {summary.model} {summary.version}: {summary.total} device(s)", title_justify="left")
    table.add_column("devices")
    table.add_column("count", justify="right")
    table.add_column("detail")
    for bucket in BUCKETS:
        ids = sorted(summary.devices.get(bucket, []))
        detail = ", ".join(ids[:8]) + (f", … (+{len(ids) - 8})" if len(ids) > 8 else "")
        if bucket == "failed" and summary.reasons:
            detail = ", ".join(f"{r}: {n}" for r, n in summary.reasons.most_common()) + " — " + detail
        if bucket == "other_version" and summary.other_versions:
            detail = ", ".join(f"{v}: {n}" for v, n in sorted(summary.other_versions.items()))
        table.add_row(labels[bucket], str(len(ids)), escape(detail))
    return table


# ---- the MQTT shell --------------------------------------------------------------------------


class FleetSubscriber:
    """A :class:`FleetView` fed by a broker connection (paho's thread); readers take a locked snapshot."""

    def __init__(self, cfg: MqttSinkConfig, topic_root: str, connect_timeout_s: float = 5.0) -> None:
        self.cfg = cfg
        self.view = FleetView(topic_root)
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._refused: str | None = None
        self._connect_timeout_s = connect_timeout_s
        self._client: Any = None

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.cfg.effective_port}"

    def start(self) -> None:
        """Connect and subscribe; a :class:`BrokerError` naming host:port when that fails."""
        from agent.sinks.mqtt.client import tool_client

        client = tool_client(self.cfg, f"edge-fleet-{os.getpid()}-{time.monotonic_ns() % 1_000_000}")
        client.connect_timeout = self._connect_timeout_s
        client.reconnect_delay_set(1, 10)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *_: self.connected.clear()
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        try:
            client.connect(self.cfg.host, self.cfg.effective_port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as exc:  # refused, unknown host, timeout; ValueError: bad host/port for paho
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise BrokerError(f"cannot reach the MQTT broker at {self.address}: {reason}; check --broker") from None
        self._client = client
        client.loop_start()
        answered = self.connected.wait(self._connect_timeout_s)
        if not answered or self._refused:
            self.close()
            if self._refused:
                raise BrokerError(
                    f"the MQTT broker at {self.address} refused the connection: {self._refused}; check --username/--password-file"
                )
            raise BrokerError(
                f"{self.address} accepted TCP but gave no MQTT answer within {self._connect_timeout_s:.0f} s; "
                "is it the broker's plain MQTT port?"
            )

    def _on_connect(self, client: Any, _u: Any, _flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self._refused = str(rc)
        else:
            client.subscribe([(t, 1) for t in self.view.subscriptions()])
        self.connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, codes: list[Any], _p: Any) -> None:
        for topic, code in zip(self.view.subscriptions(), codes, strict=False):
            if code.is_failure:  # an ACL that hides part of the tree: say which part is missing
                log.warning("the broker at %s refused the subscription to %s: %s", self.address, topic, code)
            else:
                log.debug("subscribed to %s on %s", topic, self.address)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.view.ingest(msg.topic, bytes(msg.payload), time.time(), retained=bool(msg.retain))

    def snapshot(self) -> tuple[list[DeviceRow], int]:
        import copy

        with self._lock:
            return [copy.copy(r) for r in self.view.rows()], sum(self.view.malformed.values())  # rows hold scalars only

    def rollout(self, model: str, version: str) -> RolloutSummary:
        with self._lock:
            return self.view.rollout(model, version)

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


def _caption(sub: FleetSubscriber, malformed: int) -> str:
    state = "connected" if sub.connected.is_set() else "[red]disconnected, retrying[/red]"
    extra = f" · {malformed} malformed message(s) skipped" if malformed else ""
    return f"{sub.address} · {sub.view.topic_root}/+ · {state}{extra}"


def _status_renderable(sub: FleetSubscriber) -> RenderableType:
    rows, malformed = sub.snapshot()
    return status_table(rows, time.time(), caption=_caption(sub, malformed))


def _live(sub: FleetSubscriber, render: Any) -> int:
    from rich.live import Live

    with Live(get_renderable=render, refresh_per_second=2, screen=False):
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_status(args: argparse.Namespace, sub: FleetSubscriber) -> int:
    if not args.once:
        return _live(sub, lambda: _status_renderable(sub))
    time.sleep(args.wait)
    rows, _ = sub.snapshot()
    if args.json:
        now = time.time()
        print(json.dumps([r.as_dict(now) for r in rows], indent=2))
    else:
        _console().print(_status_renderable(sub))
    return 0


def cmd_rollout(args: argparse.Namespace, sub: FleetSubscriber) -> int:
    if args.watch:
        return _live(sub, lambda: rollout_table(sub.rollout(args.model, args.version)))
    time.sleep(args.wait)
    summary = sub.rollout(args.model, args.version)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        _console().print(rollout_table(summary))
    return 0


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:  # piped: don't squeeze the table into 80 columns
        console = Console(highlight=False, width=160)
    return console


# ---- arguments -----------------------------------------------------------------------------


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``."""
    host, sep, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not sep or (":" in host and not host.startswith("[")):  # no port, or a bare IPv6 address
        host, port = text, "1883"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"--broker {text!r} is not HOST:PORT with a port 1..65535 (e.g. 127.0.0.1:1883)")
    return host, int(port)


def _mqtt_config(args: argparse.Namespace) -> MqttSinkConfig:
    from pathlib import Path

    from agent.sinks.mqtt.config import MqttSinkConfig, check_topic_prefix

    host, port = parse_broker(args.broker)
    try:
        check_topic_prefix(args.topic_root)
    except ValueError as exc:
        raise UsageError(f"--topic-root: {exc}") from None
    if args.password_file and not args.username:
        raise UsageError("--password-file needs --username")
    if args.password_file and not Path(args.password_file).expanduser().is_file():
        raise UsageError(f"--password-file {args.password_file}: no such file; give the file holding the broker password")
    return MqttSinkConfig(host=host, port=port, username=args.username, password_file=args.password_file)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-fleet", description="The fleet's models, OTA updates and health, from MQTT.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")
    common.add_argument("--username", help="broker user name")
    common.add_argument("--password-file", help="file holding the broker password (first line)")
    common.add_argument("--topic-root", default="edge", help="devices publish under ROOT/<device_id>/ (default edge)")
    common.add_argument("--wait", type=float, default=2.0, metavar="S", help="seconds to collect retained state (default 2)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table (not with live views)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug log (names the topic of each skipped payload)")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", parents=[common], help="one row per device: model, update, fps, p95, temperature")
    status.add_argument("--once", action="store_true", help="collect for --wait seconds, print, exit (default: live)")
    rollout = sub.add_parser("rollout", parents=[common], help="how far MODEL VERSION has rolled out")
    rollout.add_argument("model", metavar="MODEL", help="model name")
    rollout.add_argument("version", metavar="VERSION", help="model version, e.g. 1.2.0")
    rollout.add_argument("--once", action="store_true", help="collect for --wait seconds, print, exit (the default)")
    rollout.add_argument("--watch", action="store_true", help="keep updating until Ctrl-C")
    return parser


def _check(args: argparse.Namespace) -> None:
    if not (args.wait > 0 and math.isfinite(args.wait)):
        raise UsageError(f"--wait {args.wait}: give a positive number of seconds")
    live = args.watch if args.command == "rollout" else not args.once
    if args.json and live:
        raise UsageError("--json prints once: add --once" + (" and drop --watch" if args.command == "rollout" else ""))
    if args.command == "rollout":
        if args.watch and args.once:
            raise UsageError("--watch and --once exclude each other")
        if not args.model.strip() or "/" in args.model:
            raise UsageError(f"MODEL {args.model!r} is not a model name")
        try:
            parse_version(args.version, "VERSION")
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """``edge-fleet``: 0 done, 1 broker unreachable or refused, 2 bad arguments."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the problem (or --help)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _check(args)
        sub = FleetSubscriber(_mqtt_config(args), args.topic_root)
        sub.start()
    except UsageError as exc:
        print(f"edge-fleet: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:  # BrokerError, or the password file cannot be read
        print(f"edge-fleet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while connecting
        return 130
    try:
        return cmd_status(args, sub) if args.command == "status" else cmd_rollout(args, sub)
    except KeyboardInterrupt:
        return 0
    finally:
        sub.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
