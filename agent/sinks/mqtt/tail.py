"""``edge-agent tail``: subscribe to a device's topics and pretty-print what arrives (rich).

Redeliveries (same ``msg_id``) are marked ``dup``; ``--json`` prints one JSON line per message.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from typing import Any

from rich.console import Console
from rich.markup import escape

from agent.sinks.mqtt.config import MqttSinkConfig

_STYLES = {"detections": "green", "telemetry": "cyan", "events": "yellow", "status": "blue", "availability": "magenta"}


class _Seen:
    """Recent msg_ids (bounded) to flag redeliveries."""

    def __init__(self, size: int = 50_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def dup(self, msg_id: str | None) -> bool:
        if msg_id is None:
            return False
        if msg_id in self._ids:
            return True
        self._ids[msg_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return False


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def describe(suffix: str, payload: bytes) -> str:
    """One human line for a message on ``<prefix>/<suffix>``."""
    if suffix == "snapshot":
        return f"JPEG, {len(payload)} bytes"
    if suffix == "availability":
        return payload.decode(errors="replace")
    try:
        doc = json.loads(payload)
    except ValueError:
        return f"{len(payload)} bytes (not JSON)"
    if not isinstance(doc, dict):
        return escape(str(doc))
    if suffix == "detections" and isinstance(doc.get("result"), dict):
        r = doc["result"]
        dets = ", ".join(f"{d.get('label')} {d.get('score', 0):.2f}" for d in r.get("detections", [])) or "nothing"
        t = r.get("timings", {})
        return (
            f"seq {doc.get('seq')} frame {r.get('frame_id')} ({escape(str(r.get('source_id')))}): {escape(dets)}"
            f"  (invoke {_ms(t.get('invoke_ms'))} ms, capture→result {_ms(t.get('capture_to_result_ms'))} ms)"
        )
    if suffix == "telemetry" and isinstance(doc.get("telemetry"), dict):
        t = doc["telemetry"]
        fps, tr = t.get("fps", {}), t.get("transport") or {}
        inv = t.get("latency_ms", {}).get("invoke", {})
        return (
            f"fps src {_ms(fps.get('source'))} inf {_ms(fps.get('inference'))} pub {_ms(fps.get('published'))}"
            f" · invoke p50 {_ms(inv.get('p50'))} p95 {_ms(inv.get('p95'))} ms"
            f" · cpu {_ms(t.get('cpu', {}).get('process_percent'))} % · temp {_ms(t.get('soc', {}).get('temperature_c'))} °C"
            f" · outbox {tr.get('outbox_rows', '-')} · dropped {sum((tr.get('dropped') or {}).values())}"
        )
    if suffix == "events":
        return f"{doc.get('event')} {escape(json.dumps(doc.get('data', {})))}"
    if suffix == "status":
        model = doc.get("model") or {}
        return (
            f"{doc.get('state')} · model {model.get('name')} {model.get('version')} · up {doc.get('uptime_s', 0):.0f} s"
            f" · policy {doc.get('publish_policy')} · update {doc.get('update', {}).get('state')}"
        )
    if suffix.endswith("/result"):
        verdict = "ok" if doc.get("ok") else f"error {doc.get('error', {}).get('code')}: {doc.get('error', {}).get('message')}"
        return f"id {doc.get('id')} {escape(verdict)} {escape(json.dumps(doc.get('result')))}"
    return escape(json.dumps(doc)[:300])


def tail(
    cfg: MqttSinkConfig,
    prefix: str,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """Print messages under ``prefix/#`` until ``count`` messages, ``duration_s`` or Ctrl-C."""
    from agent.sinks.mqtt.client import tool_client

    out = console or Console(highlight=False, soft_wrap=True)
    seen = _Seen()
    done = threading.Event()
    received = 0
    client = tool_client(cfg, f"edge-agent-tail-{os.getpid()}")
    base = prefix.removesuffix("/#")
    levels = base.count("/") + 1

    def on_connect(c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            out.print(f"[red]broker refused the connection: {rc}[/red]")
            done.set()
            return
        c.subscribe(f"{base}/#", qos=1)
        if not as_json:
            out.print(f"[dim]subscribed to {base}/# on {cfg.host}:{cfg.effective_port}[/dim]")

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        nonlocal received
        if count is not None and received >= count:  # messages already in flight before the disconnect
            return
        # what follows the device prefix; with a wildcard prefix (edge/+) show the device level too
        parts = msg.topic.split("/")
        kind = "/".join(parts[levels:])
        suffix = "/".join(parts[levels - 1 :]) if "+" in base else kind
        if as_json:
            try:
                body: Any = json.loads(msg.payload)
            except ValueError:  # availability is plain text, a snapshot is JPEG
                body = msg.payload.decode() if kind == "availability" else {"bytes": len(msg.payload)}
            print(json.dumps({"topic": msg.topic, "retain": bool(msg.retain), "payload": body}), flush=True)
        else:
            msg_id = None
            if kind in ("detections", "events", "telemetry"):
                try:
                    msg_id = json.loads(msg.payload).get("msg_id")
                except (ValueError, AttributeError):
                    msg_id = None
            flag = " [red]dup[/red]" if seen.dup(msg_id) else ""
            style = _STYLES.get(kind.split("/")[0], "white")
            stamp = time.strftime("%H:%M:%S")
            out.print(f"[dim]{stamp}[/dim] [{style}]{escape(suffix)}[/{style}]{flag} {describe(kind, msg.payload)}")
        received += 1
        if count is not None and received >= count:
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect_async(cfg.host, cfg.effective_port, keepalive=cfg.keepalive_s)
    client.loop_start()
    try:
        done.wait(duration_s)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return 0
