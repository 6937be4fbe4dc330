"""The local status file: written by the running agent, read by ``edge-agent status``.

The agent rewrites ``<state_dir>/status.json`` atomically every ``status_file_interval_s``
(2 s by default; the MQTT sink does it). A file rather than a socket: nothing listens, so
there is no new attack surface and no extra systemd sandbox rule; it works under
``DynamicUser=`` with ``StateDirectory=``; it still says something useful when the agent has
died (last known state, and that it is stale); and any tool (``jq``) can read it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

STATUS_FILE = "status.json"
STALE_AFTER_S = 15.0


def write_status_file(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` atomically (readers never see half a file); no fsync: it is advisory and rewritten every few seconds."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The status document with ``alive`` (its pid runs) and ``age_s``; None when there is no file."""
    path = state_dir / STATUS_FILE
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"error": f"cannot read {path}: {exc}", "alive": False, "age_s": None}
    pid = doc.get("pid")
    alive = False
    if isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True  # it exists, it is just not ours (systemd DynamicUser)
    doc["alive"] = alive
    doc["age_s"] = time.time() - float(doc.get("written_at", 0))
    return doc


def _fmt(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def _thresholds(values: dict[str, Any] | None) -> str:
    """``score ≥ 0.5 · NMS IoU 0.45 · at most 100 per frame``, not a Python dict."""
    if not values:
        return "thresholds unknown"
    parts = []
    if "score" in values:
        parts.append(f"score ≥ {values['score']:g}")
    if "iou" in values:
        parts.append(f"NMS IoU {values['iou']:g}")
    if "max_detections" in values:
        parts.append(f"at most {values['max_detections']} per frame")
    return " · ".join(parts)


def render(doc: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    status = doc.get("status") or {}
    tel = doc.get("telemetry") or {}
    mqtt = doc.get("mqtt") or {}
    model = status.get("model") or {}
    table = Table(show_header=False, box=None, padding=(0, 2))
    running = doc["alive"] and (doc["age_s"] or 0) < STALE_AFTER_S and status.get("state") == "running"
    state = "[green]running[/green]" if running else f"[red]{'stale' if doc['alive'] else 'not running'}[/red]"
    table.add_row("agent", f"{state} · pid {doc.get('pid')} · {status.get('agent_version')} · updated {_fmt(doc['age_s'])} s ago")
    table.add_row("device", f"{doc.get('device_id')} · up {_fmt(status.get('uptime_s'), ' s', 0)}")
    table.add_row("model", f"{model.get('name')} {model.get('version')} · {_thresholds(status.get('thresholds'))}")
    src = status.get("source") or {}
    table.add_row("source", f"{src.get('id')} ({src.get('type')}) · {'delivering' if src.get('connected') else 'not delivering'}")
    if tel:
        fps, lat = tel.get("fps", {}), tel.get("latency_ms", {})
        table.add_row(
            "fps",
            f"source {_fmt(fps.get('source'))} · inference {_fmt(fps.get('inference'))} · published {_fmt(fps.get('published'))}",
        )
        for stage in ("invoke", "capture_to_result"):
            s = lat.get(stage, {})
            table.add_row(
                stage,
                f"p50 {_fmt(s.get('p50'), ' ms', 2)} · p95 {_fmt(s.get('p95'), ' ms', 2)} · p99 {_fmt(s.get('p99'), ' ms', 2)}",
            )
        cpu, mem, soc = tel.get("cpu", {}), tel.get("memory", {}), tel.get("soc", {})
        rss = mem.get("rss_bytes")
        table.add_row(
            "machine",
            f"cpu {_fmt(cpu.get('process_percent'), ' %')} (system {_fmt(cpu.get('system_percent'), ' %')})"
            f" · rss {_fmt(rss / 2**20 if rss else None, ' MiB')} · temp {_fmt(soc.get('temperature_c'), ' °C')}"
            f" · throttled {(soc.get('throttled') or {}).get('raw', '-')}"
            f" · free disk {_fmt((tel.get('disk', {}).get('state_dir_free_bytes') or 0) / 2**30, ' GiB')}",
        )
        tr = tel.get("transport") or {}
        if tr:
            dropped = {k: v for k, v in (tr.get("dropped") or {}).items() if v}
            table.add_row(
                "outbox",
                f"{tr.get('outbox_rows')} waiting ({_fmt((tr.get('outbox_bytes') or 0) / 1024, ' KiB')})"
                f" · oldest {_fmt(tr.get('outbox_oldest_age_s'), ' s')} · dropped {dropped or 0}",
            )
    conn = "[green]connected[/green]" if mqtt.get("connected") else "[red]disconnected[/red]"
    if mqtt:
        extra = f" · {mqtt['last_error']}" if mqtt.get("last_error") else ""
        table.add_row("mqtt", f"{conn} ({mqtt.get('broker')}){extra}")
    upd = status.get("update") or {}
    table.add_row("update", f"{upd.get('state')}{' · ' + upd['detail'] if upd.get('detail') else ''}")
    console.print(table)


def cmd_status(args: argparse.Namespace) -> int:
    from agent.cli import _config_path
    from agent.config import load_config

    state_dir = Path(args.state_dir) if args.state_dir else load_config(_config_path(args.config)).state_dir
    doc = read_status(state_dir)
    if doc is None:
        print(
            f"no status at {state_dir / STATUS_FILE}: the agent is not running here, uses another state_dir, "
            "or runs without an mqtt sink (status_file_interval_s)"
        )
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
    elif "error" in doc:
        print(doc["error"])
    else:
        from rich.console import Console

        render(doc, Console(highlight=False))
    status = doc.get("status") or {}
    fresh = doc.get("alive") and (doc.get("age_s") or 0) < STALE_AFTER_S and status.get("state") == "running"
    return 0 if fresh else 1


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="show what the running agent is doing (from <state_dir>/status.json)")
    status.add_argument("-c", "--config", help="YAML config file (for its state_dir)")
    status.add_argument("--state-dir", help="read this state directory instead")
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.set_defaults(func=cmd_status)
