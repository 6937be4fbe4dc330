"""``edge-registry``: create a signed model registry, publish, promote, roll back, keep it fresh, serve it.

Exit codes: 0 ok, 2 bad usage or input (the message names the file/field/value), 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent import __version__
from agent.cli_conventions import add_version_everywhere
from agent.errors import AgentError
from agent.manifest import sidecar_candidates
from agent.ota.errors import PolicyError
from agent.ota.repository import Registry
from agent.ota.targets import CHANNELS, ModelTarget
from agent.ota.tuf_repository import DEFAULT_EXPIRES_DAYS, ONLINE_ROLES, RegistryInputError
from agent.sinks.mqtt.cli_args import BrokerOptionError, add_broker_options, broker_config
from agent.sinks.mqtt.config import MqttSinkConfig

DEFAULT_REGISTRY = "./registry"
DEFAULT_FLEET_TOPIC = "edge/fleet/updates"
CRON_HINT = "Cron (hourly):  0 * * * *  edge-registry --registry /srv/edge-registry refresh-timestamp"

EPILOG = f"""\
The registry directory comes from --registry DIR, else $EDGE_REGISTRY_DIR, else {DEFAULT_REGISTRY}.
Serve DIR/repository/ with any static web server; devices trust DIR/repository/metadata/1.root.json.
The timestamp expires after {DEFAULT_EXPIRES_DAYS["timestamp"]:g} day(s): re-sign it from cron.
  {CRON_HINT}
"""


class UsageError(Exception):
    """A command-line value is wrong (exit code 2)."""


def _registry_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "registry", None) or os.environ.get("EDGE_REGISTRY_DIR") or DEFAULT_REGISTRY)


def _open(args: argparse.Namespace) -> Registry:
    return Registry(_registry_dir(args))


# ----- notification ----------------------------------------------------------------------------------------------


class Notifier:
    """The fleet notification settings, checked before the registry changes (a typo must not half-succeed)."""

    def __init__(self, broker: MqttSinkConfig, topic: str) -> None:
        self.broker = broker
        self.topic = topic

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.broker.tls.enabled else 'mqtt'}://{self.broker.host}:{self.broker.effective_port}"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Notifier:
        try:
            return cls(broker_config(args), args.fleet_topic)
        except BrokerOptionError as exc:
            raise UsageError(str(exc)) from None

    def send(self, target: ModelTarget, timeout: float = 10.0) -> dict[str, Any]:
        """Publish the retained fleet notification (QoS 1) and wait until the broker has acknowledged it."""
        from agent.sinks.mqtt.client import tool_client

        payload = {
            "model": target.model,
            "version": target.version,
            "channel": target.channel,
            "rollout": target.rollout,
            "published_at": target.published_at,
        }
        cfg = self.broker
        where = f"MQTT broker {self.address}"
        try:
            client = tool_client(cfg, f"edge-registry-{os.getpid()}-{time.monotonic_ns()}")
        except AgentError as exc:
            raise UsageError(str(exc)) from None
        connected = threading.Event()
        refused: list[str] = []

        def on_connect(_c: Any, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
            if reason_code.is_failure:
                refused.append(str(reason_code))
            connected.set()

        client.on_connect = on_connect
        try:
            client.connect(cfg.host, cfg.effective_port, keepalive=30)
        except (OSError, ValueError) as exc:  # refused, unknown host, TLS handshake failure
            raise AgentError(f"cannot reach {where} ({exc}); check --broker and the --tls options") from None
        client.loop_start()
        try:
            if not connected.wait(timeout) or refused:
                why = refused[0] if refused else f"no answer within {timeout:g} s"
                raise AgentError(f"{where} refused the connection: {why}; check --broker and the credentials")
            info = client.publish(self.topic, json.dumps(payload), qos=1, retain=True)
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise AgentError(f"{where} did not acknowledge the notification on {self.topic} within {timeout:g} s")
        finally:
            client.disconnect()
            client.loop_stop()
        return payload


def _notifier(args: argparse.Namespace) -> Notifier | None:
    return Notifier.from_args(args) if args.notify else None


def _notify(notifier: Notifier | None, target: ModelTarget, console: Console) -> None:
    if notifier is None:
        return
    try:
        notifier.send(target)
    except AgentError as exc:
        raise AgentError(f"the registry change is done and signed, but the fleet was not notified: {exc}") from None
    console.print(f"notified the fleet on {notifier.topic} via {notifier.address} (retained)")


# ----- commands --------------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    days = {role: getattr(args, f"expires_{role}") for role in DEFAULT_EXPIRES_DAYS}
    registry = Registry.init(args.dir, root_keys=args.root_keys, root_threshold=args.threshold, expires_days=days)
    console.print(f"created registry {registry.dir}")
    console.print(f"  serve:        {registry.repository_dir}/  (edge-registry serve, nginx, S3...)")
    console.print(f"  trusted root: {registry.trusted_root_path}  (install on every device)")
    console.print(f"  root keys:    {registry.dir / 'root-keys'}  (move them offline now; only root rotation needs them)")
    console.print(f"  {CRON_HINT}")
    return 0


def _find_manifest_file(model: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    for candidate in sidecar_candidates(model):
        if candidate.is_file():
            return candidate
    names = ", ".join(str(p) for p in sidecar_candidates(model))
    raise UsageError(f"no manifest for {model} (looked for {names}); pass --manifest model.json")


def cmd_publish(args: argparse.Namespace, console: Console) -> int:
    notifier = _notifier(args)
    registry = _open(args)
    model = Path(args.model)
    target = registry.publish(
        model,
        _find_manifest_file(model, args.manifest),
        channel=args.channel,
        rollout=args.rollout,
        min_agent_version=args.min_agent_version,
        name=args.name,
        version=args.version,
    )
    console.print(
        f"published {target.model} {target.version} (channel {target.channel}, rollout {target.rollout:g}%, "
        f"sha256 {target.manifest['sha256'][:16]}…)"
    )
    _notify(notifier, target, console)
    return 0


def cmd_promote(args: argparse.Namespace, console: Console) -> int:
    notifier = _notifier(args)
    target = _open(args).promote(args.model, args.version, channel=args.channel, rollout=args.rollout)
    console.print(f"{target.model} {target.version}: channel {target.channel}, rollout {target.rollout:g}%")
    _notify(notifier, target, console)
    return 0


def cmd_rollback(args: argparse.Namespace, console: Console) -> int:
    notifier = _notifier(args)
    registry = _open(args)
    instruction = registry.rollback(args.model, args.to, reason=args.reason)
    withdrawn = [t.version for t in registry.models(args.model) if t.withdrawn]
    console.print(
        f"rollback #{instruction.serial}: {args.model} -> {instruction.to_version}; withdrawn: {', '.join(withdrawn) or 'none'}"
    )
    if notifier is not None:  # devices converge on to_version; published_at is when this instruction was signed
        target = next(t for t in registry.models(args.model) if t.version == instruction.to_version)
        _notify(notifier, target.model_copy(update={"published_at": instruction.issued_at}), console)
    return 0


def cmd_refresh(args: argparse.Namespace, console: Console) -> int:
    written = _open(args).refresh_timestamp(expires_in_days=args.expires_in_days, snapshot=args.snapshot)
    console.print("re-signed " + ", ".join(f"{role} v{version}" for role, version in written.items()))
    return 0


def cmd_rotate(args: argparse.Namespace, console: Console) -> int:
    roles = list(ONLINE_ROLES) if args.online else (args.role or [])
    version = _open(args).rotate(roles, root_keys=args.root_keys, root_threshold=args.threshold)
    changed = [f"new {role} key" for role in roles]
    if args.root_keys:
        changed.append(f"{args.root_keys} new root key(s), threshold {args.threshold or 1} (old ones in root-keys/retired/)")
    console.print(f"signed root v{version}: {', '.join(changed) or 'renewed expiry, same keys'}")
    console.print("devices walk to it from the root they were installed with at their next check; move root-keys/ offline")
    return 0


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    status = _open(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    columns = ("model", "version", "channel", "rollout", "state", "published (UTC)", "size")
    models = Table(*columns, title=f"models in {status['registry']}")
    for name, versions in status["models"].items():
        for v in versions:
            state = "[red]withdrawn[/red]" if v["withdrawn"] else "live"
            size = f"{v['length'] / 1e6:.2f} MB"
            models.add_row(name, v["version"], v["channel"], f"{v['rollout']:g}%", state, _when(v["published_at"]), size)
    console.print(models if models.row_count else "no models published yet (edge-registry publish MODEL --manifest model.json)")
    if status["rollbacks"]:
        rollbacks = Table("model", "to version", "serial", "issued (UTC)", "reason", title="rollback instructions")
        for name, r in status["rollbacks"].items():
            rollbacks.add_row(name, r["to_version"], str(r["serial"]), _when(r["issued_at"]), r["reason"])
        console.print(rollbacks)
    roles = Table("role", "version", "expires (UTC)", "state", title="signed metadata")
    for role, info in status["roles"].items():
        left = f"{info['expires_in_s'] / 3600:.1f} h left"
        state = "[red]EXPIRED[/red]" if info["expired"] else f"[yellow]{left}[/yellow]" if info["expiring_soon"] else "ok"
        roles.add_row(role, str(info["version"]), info["expires"], state)
    console.print(roles)
    return 0


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from agent.ota.httpserver import start_server

    base = _registry_dir(args)
    tree = base / "repository" if (base / "repository").is_dir() else base  # a server may hold only repository/
    if not (tree / "metadata").is_dir():
        raise UsageError(f"{base} has no repository/metadata/: point --registry at a registry made by `edge-registry init`")
    server = start_server(tree, host=args.host, port=args.port)
    console.print(f"serving {tree} at {server.url}  (development only; use nginx/S3 in production). Ctrl-C stops.")
    console.print(f"device config: url {server.url}, trusted root {tree / 'metadata' / '1.root.json'}")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # systemd / containers stop with SIGTERM
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


# ----- parser ----------------------------------------------------------------------------------------------------


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a percent 0..100") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..100")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 days")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", metavar="DIR", default=argparse.SUPPRESS, help=f"registry directory ({DEFAULT_REGISTRY})")
    notify = argparse.ArgumentParser(add_help=False)
    group = notify.add_argument_group("fleet notification (MQTT, retained, QoS 1)")
    group.add_argument("--notify", action="store_true", help="tell devices now instead of at their next poll")
    group.add_argument(
        "--fleet-topic",
        default=DEFAULT_FLEET_TOPIC,
        metavar="TOPIC",
        help=f"retained topic devices watch ({DEFAULT_FLEET_TOPIC})",
    )
    add_broker_options(group)

    parser = argparse.ArgumentParser(
        prog="edge-registry",
        description="Signed (TUF) model registry for edge-agent OTA updates.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a registry: keys, root of trust, empty metadata")
    p.add_argument("dir", metavar="DIR", help="the new registry's directory (keys, repository/)")
    p.add_argument("--root-keys", type=int, default=1, metavar="N", help="number of root keys (1)")
    p.add_argument("--threshold", type=int, default=1, metavar="N", help="root keys needed to sign a new root (1)")
    for role, days in DEFAULT_EXPIRES_DAYS.items():
        p.add_argument(f"--expires-{role}", type=_positive, default=days, metavar="DAYS", help=f"{role} lifetime ({days} days)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("publish", parents=[common, notify], help="publish a model version")
    p.add_argument("model", metavar="MODEL", help="the model file (.tflite/.onnx)")
    p.add_argument("--manifest", metavar="FILE", help="its manifest (default: the sidecar JSON next to MODEL)")
    p.add_argument(
        "--channel",
        choices=CHANNELS,
        default="stable",
        help="stable: every device; canary: devices on the canary channel only (stable)",
    )
    p.add_argument("--rollout", type=_percent, default=100.0, metavar="PERCENT", help="share of devices, by bucket (100)")
    p.add_argument("--min-agent-version", default="0", metavar="V", help="devices with an older edge-agent skip it (0)")
    p.add_argument("--name", help="model name (default: the manifest's)")
    p.add_argument("--model-version", dest="version", help="model version (default: the manifest's)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("promote", parents=[common, notify], help="change a version's channel or rollout")
    p.add_argument("model", metavar="MODEL", help="model name")
    p.add_argument("version", metavar="VERSION", help="model version, e.g. 1.2.0")
    p.add_argument("--channel", choices=CHANNELS, help="move it to this channel")
    p.add_argument("--rollout", type=_percent, metavar="PERCENT", help="new share of devices, by bucket")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", parents=[common, notify], help="send devices back to an earlier version")
    p.add_argument("model", metavar="MODEL", help="model name")
    p.add_argument("--to", required=True, metavar="VERSION", help="the version devices go back to")
    p.add_argument("--reason", default="", help="why (recorded in the signed metadata and shown by status)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "refresh-timestamp",
        parents=[common],
        help="re-sign the timestamp (run from cron)",
        description="Re-sign the timestamp; also snapshot/targets when they are within 2 days of expiry.",
        epilog=CRON_HINT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--expires-in-days", type=_positive, metavar="DAYS", help="timestamp lifetime (registry setting)")
    p.add_argument("--snapshot", action="store_true", help="re-sign the snapshot too")
    p.set_defaults(func=cmd_refresh)

    p = sub.add_parser(
        "rotate",
        parents=[common],
        help="sign a new root: renew its expiry, rotate online keys or root keys (needs root-keys/)",
        description="Sign a new root version with the current root keys (devices trust it through them) and the new "
        "ones. With no option it renews root's expiry; run it well before root expires (status shows when).",
    )
    p.add_argument("--role", action="append", choices=ONLINE_ROLES, help="give this online role a new key (repeatable)")
    p.add_argument("--online", action="store_true", help="new keys for every online role (targets, snapshot, timestamp)")
    p.add_argument("--root-keys", type=int, metavar="N", help="replace the root keys with N new ones")
    p.add_argument("--threshold", type=int, metavar="N", help="root keys needed to sign the next root (with --root-keys)")
    p.set_defaults(func=cmd_rotate)

    p = sub.add_parser("status", parents=[common], help="models, rollbacks, metadata expiry")
    p.add_argument("--json", action="store_true", help="print the status as JSON on stdout")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("serve", parents=[common], help="serve repository/ over HTTP with Range support (development only)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (8000)")
    p.set_defaults(func=cmd_serve)
    add_version_everywhere(parser, f"edge-registry {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad usage, 0 after --help
        return int(exc.code or 0)
    console = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    try:
        return int(args.func(args, console))
    except (UsageError, RegistryInputError, PolicyError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except (AgentError, OSError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
