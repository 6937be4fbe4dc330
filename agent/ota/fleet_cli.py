"""``edge-fleet``: the fleet's models, updates and health, from the devices' own MQTT topics.

The pure core is :mod:`agent.ota.fleet` (:class:`FleetView`). This shell
subscribes with the MQTT tools' client (:func:`agent.sinks.mqtt.client.tool_client`) and
renders rich tables: ``status`` (live, or ``--once``) and ``rollout MODEL VERSION``.
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
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.cli_conventions import add_version_everywhere
from agent.errors import AgentError
from agent.ota.fleet import BUCKETS, LATENCY_STAGES, UPDATING_STATES, DeviceRow, FleetView, RolloutSummary
from agent.ota.versions import parse_version

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from agent.sinks.mqtt.config import MqttSinkConfig

log = logging.getLogger(__name__)


class UsageError(AgentError):
    """A command-line argument is invalid (exit 2); the message names it."""


class BrokerError(AgentError):
    """The broker cannot be reached or refused the connection (exit 1)."""


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


def _mqtt_config(args: argparse.Namespace) -> MqttSinkConfig:
    from agent.sinks.mqtt.cli_args import BrokerOptionError, broker_config
    from agent.sinks.mqtt.config import check_topic_prefix

    try:
        check_topic_prefix(args.topic_root)
    except ValueError as exc:
        raise UsageError(f"--topic-root: {exc}") from None
    try:
        return broker_config(args)
    except BrokerOptionError as exc:
        raise UsageError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-fleet", description="The fleet's models, OTA updates and health, from MQTT.")
    common = argparse.ArgumentParser(add_help=False)
    from agent.sinks.mqtt.cli_args import add_broker_options

    add_broker_options(common)
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
    add_version_everywhere(parser, f"edge-fleet {__version__}")
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
