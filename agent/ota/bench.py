"""``edge-agent bench-ota``: a fleet of real agents on this machine takes one signed model update.

Everything is real: a fresh registry (TUF keys and metadata) served over HTTP, N ``edge-agent run``
processes (synthetic camera, the bundled demo model, MQTT to a broker), the retained fleet
notification ``edge-registry publish --notify`` sends. Once every agent runs and has processed
the frames its updater waits for, the bundled model is published as version 1.1.0 and the clock
starts. The agents' ``update`` events then tell, per agent, when it committed (the event's
``queued_at``, the device's own wall clock, minus the publish time: same machine, same clock) and
the swap gap its updater measured: the last result of the old model to the first of the new one,
next to the median frame interval before it. Target: every agent commits, and no gap exceeds
two frame intervals. Agents, registry, retained topics and the temp dir are cleaned up always.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.cli_conventions import add_json_options
from agent.errors import AgentError
from agent.ota.bench_watch import TARGET_GAP_RATIO, WARMUP_RESULTS, OtaWatch, summarize
from agent.sinks.mqtt.cli_args import parse_broker

PUBLISH_VERSION = "1.1.0"
TELEMETRY_INTERVAL_S = 5.0  # readiness needs one telemetry message (frames processed); more is load
DEVICE_PREFIX = "bench-ota-"


# ---- the shell: processes, registry, broker ---------------------------------------------------------------
@dataclass
class BenchOptions:
    agents: int = 20
    fps: float = 10.0
    broker: str = "127.0.0.1:1883"
    jitter_s: float = 0.0
    trial_frames: int = 30
    trial_s: float = 2.0
    timeout_s: float = 300.0
    keep: bool = False


def agent_config(i: int, work: Path, opts: BenchOptions, url: str, trusted_root: Path, fleet_topic: str) -> dict[str, Any]:
    """One bench agent's config: synthetic camera, demo model on one thread, MQTT, updates from the bench registry."""
    host, given_port = parse_broker(opts.broker)
    port = given_port or 1883
    device_id = f"{DEVICE_PREFIX}{i}"
    return {
        "device_id": device_id,
        "state_dir": str(work / device_id / "state"),
        "model": {"threads": 1},
        # replay: a cheap camera, so the cores go to inference (as in bench-http)
        "source": {"type": "synthetic", "fps": opts.fps, "width": 320, "height": 240, "seed": i, "replay": 32},
        "sinks": [
            {
                "type": "mqtt",
                "host": host,
                "port": port,
                "publish": "on_change",  # detections cost outbox writes; the bench is about the update
                "telemetry_interval_s": TELEMETRY_INTERVAL_S,
                "status_file_interval_s": 0,
            }
        ],
        "update": {
            "enabled": True,
            "url": url,
            "trusted_root": str(trusted_root),
            "fleet_topic": fleet_topic,
            "notify_jitter_s": opts.jitter_s,
            "check_on_start": False,
            "check_interval_s": 3600,
            "trial_frames": opts.trial_frames,
            "trial_s": opts.trial_s,
        },
    }


class AgentProcesses:
    """``edge-agent run -c CFG`` per agent, each logging to its own file."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, device_id: str, config: dict[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / "config.yaml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}  # the file alone configures them
        log = workdir / "agent.log"
        with log.open("wb") as out:
            self.procs[device_id] = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "-c", str(cfg)],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.logs[device_id] = log

    def exited(self) -> dict[str, int]:
        return {d: rc for d, p in self.procs.items() if (rc := p.poll()) is not None}

    def tail(self, device_id: str, lines: int = 15) -> str:
        try:
            text = self.logs[device_id].read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 20.0) -> dict[str, int | None]:
        """SIGTERM to all, then SIGKILL whoever is still running after ``grace_s``; exit codes by device."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.procs.values():
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        return {d: p.returncode for d, p in self.procs.items()}


class Subscriber:
    """A paho client feeding an :class:`OtaWatch` (paho's thread ingests, the bench reads under the lock)."""

    def __init__(self, host: str, port: int, watch: OtaWatch) -> None:
        from agent.sinks.mqtt.client import tool_client
        from agent.sinks.mqtt.config import MqttSinkConfig

        self.watch = watch
        self.lock = threading.Lock()
        self.address = f"{host}:{port}"
        self._subscribed = threading.Event()
        self._client = tool_client(MqttSinkConfig(host=host, port=port), f"bench-ota-{os.getpid()}-{time.monotonic_ns()}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise AgentError(f"cannot reach the MQTT broker at {self.address}: {exc}; check --broker") from None
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise AgentError(f"the MQTT broker at {self.address} did not accept the bench's subscriptions within 10 s")

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe([(t, 1) for t in self.watch.subscriptions()])

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.watch.ingest(msg.topic, bytes(msg.payload), time.time(), retained=bool(msg.retain))

    def clear_retained(self, topics: list[str]) -> None:
        """Publish empty retained payloads: the broker forgets these topics."""
        infos = [self._client.publish(t, b"", qos=1, retain=True) for t in topics]
        for info in infos:
            info.wait_for_publish(5)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to the bench runs the same cleanup as Ctrl-C (no agents left behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(what: str, done: Any, timeout_s: float, agents: AgentProcesses, progress: Any, task: Any, *, exits_fail: bool) -> None:
    """Until ``done()`` counts every agent; an agent that exits fails the wait when ``exits_fail``."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = done()
        progress.update(task, completed=count)
        if count == len(agents.procs):
            return
        for device_id, rc in agents.exited().items() if exits_fail else ():
            raise AgentError(f"agent {device_id} exited with code {rc} before {what}; its log ends:\n{agents.tail(device_id)}")
        if time.monotonic() > deadline:
            raise AgentError(f"only {count} of {len(agents.procs)} agents {what} within {timeout_s:g} s (--timeout)")
        time.sleep(0.2)


def run_ota_benchmark(opts: BenchOptions, err: Any) -> dict[str, Any]:
    """Run one bench (see the module docstring); the result document, cleaned up whatever happens."""
    from rich.progress import Progress

    from agent.demo import demo_model_path
    from agent.ota.httpserver import start_server
    from agent.ota.registry_cli import Notifier
    from agent.ota.repository import Registry

    host, given_port = parse_broker(opts.broker)
    port = given_port or 1883
    work = Path(tempfile.mkdtemp(prefix="edge-bench-ota-"))
    fleet_topic = f"edge/fleet/bench-{os.getpid()}"
    device_ids = [f"{DEVICE_PREFIX}{i}" for i in range(opts.agents)]
    agents = AgentProcesses()
    server = subscriber = None
    exit_codes: dict[str, int | None] = {}
    results: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    results["settings"] = {**asdict(opts), "fleet_topic": fleet_topic, "version": PUBLISH_VERSION, "workdir": str(work)}
    try:
        with _sigterm_as_interrupt(), Progress(console=err, transient=True) as progress:
            registry = Registry.init(work / "registry")
            server = start_server(registry.repository_dir)
            launched_at = time.time()
            watch = OtaWatch(device_ids, launched_at)
            subscriber = Subscriber(host, port, watch)
            for i, device_id in enumerate(device_ids):
                config = agent_config(i, work / "agents", opts, server.url, registry.trusted_root_path, fleet_topic)
                agents.start(device_id, config, work / "agents" / device_id)
            err.print(f"started {opts.agents} agents ({opts.fps:g} fps, registry {server.url}, broker {subscriber.address})")

            def ready() -> int:
                with subscriber.lock:
                    return len(watch.ready())

            task = progress.add_task("agents running", total=opts.agents)
            _wait(
                f"running with {WARMUP_RESULTS} frames processed", ready, opts.timeout_s, agents, progress, task, exits_fail=True
            )
            results["ready_s"] = round(time.time() - launched_at, 1)
            err.print(f"all {opts.agents} agents running after {results['ready_s']:.1f} s")

            model_dir = demo_model_path("tflite-int8")
            manifest_file = model_dir / "model.json"
            manifest = json.loads(manifest_file.read_text())
            target = registry.publish(model_dir / manifest["file"], manifest_file, name=manifest["name"], version=PUBLISH_VERSION)
            from agent.sinks.mqtt.config import MqttSinkConfig

            notifier = Notifier(MqttSinkConfig(host=host, port=port), fleet_topic)
            with subscriber.lock:
                watch.published_at = time.time()  # the clock starts as the notification leaves
            notifier.send(target)
            results["model"] = target.model
            err.print(f"published {target.model} {target.version}; notified {fleet_topic} (retained)")

            def finished() -> int:  # an outcome reported, or the agent is gone
                with subscriber.lock:
                    return len(device_ids) - len(set(watch.pending()) - set(agents.exited()))

            task = progress.add_task("agents finished the update", total=opts.agents)
            try:
                _wait("finished the update", finished, opts.timeout_s, agents, progress, task, exits_fail=False)
            except AgentError as exc:  # the timeout: report what was seen so far
                err.print(f"[yellow]{exc}[/yellow]")
            with subscriber.lock:
                for device_id in watch.pending():
                    a = watch.agents[device_id]
                    rc = agents.procs[device_id].poll()
                    a.detail = f"agent exited with code {rc}" if rc is not None else f"last state {watch.last_state(device_id)}"
                per_agent = [watch.agents[d] for d in device_ids]
                rollout = watch.view.rollout(target.model, target.version).as_dict()["counts"]
            results.update(summarize(per_agent))
            results["fleet_view"] = rollout  # edge-fleet's reading of the same messages, as a cross-check
            results["per_agent"] = [a.as_dict() for a in per_agent]
    finally:
        exit_codes = agents.stop()
        if subscriber is not None:
            time.sleep(0.5)  # a killed agent's will ("offline") lands before it is cleared
            retained = [f"edge/{d}/{s}" for d in device_ids for s in ("status", "availability", "counts")]
            try:
                subscriber.clear_retained([fleet_topic, *retained])
            finally:
                subscriber.close()
        if server is not None:
            server.stop()
        if opts.keep:
            err.print(f"kept {work} (registry, agent configs, state and logs)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["agents_exit_codes"] = {str(k): sum(1 for v in exit_codes.values() if v == k) for k in set(exit_codes.values())}
    return results


# ---- output -----------------------------------------------------------------------------------------------
def _f(v: float | None, d: int = 2) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def print_results(console: Any, r: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    s = r["settings"]
    t = Table(
        title=f"bench-ota · {r['machine']} · {r['cpus']} CPUs · Python {r['python']} · {s['agents']} agents at {s['fps']:g} fps, "
        f"trial {s['trial_frames']} frames / {s['trial_s']:g} s, jitter {s['jitter_s']:g} s"
    )
    for col in ("measure", "value", "target", "ratio"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    n, c = r["agents"], r["committed"]
    t.add_row("agents (all running after)", f"{n} ({r['ready_s']:.1f} s)", "", "")
    t.add_row(
        "committed / failed / no answer", f"{c} / {r['failed']} / {r['no_answer']}", f"all {n}", f"{c / n:.2f}x" if n else "-"
    )
    ct = r["commit_s"]
    t.add_row(
        "publish -> commit first / median / p95 / last",
        f"{_f(ct['first'])} / {_f(ct['p50'])} / {_f(ct['p95'])} / {_f(ct['last'])} s",
        "",
        "",
    )
    medians = []
    for phase in ("downloading", "staged", "trial", "committed"):
        xs = [a["phases"][phase] for a in r["per_agent"] if phase in a["phases"]]
        medians.append(f"{phase} {_f(statistics.median(xs) if xs else None, 1)}")
    t.add_row("  median time to reach each phase (s)", " / ".join(medians), "", "")
    g = r["swap_gap_ms"]
    t.add_row("swap gap p50 / p95 / max", f"{_f(g['p50'])} / {_f(g['p95'])} / {_f(g['max'])} ms", "", "")
    t.add_row("frame interval before the swap p50", f"{_f(r['frame_interval_ms_p50'])} ms", "", "")
    gr = r["gap_ratio"]
    verdict = (
        "-" if gr["max"] is None else f"{gr['max'] / TARGET_GAP_RATIO:.2f}x {'ok' if gr['max'] <= TARGET_GAP_RATIO else 'MISSED'}"
    )
    unmeasured = f" ({r['gap_unmeasured']} unmeasured)" if r["gap_unmeasured"] else ""
    t.add_row(
        "swap gap / frame interval p50 / max",
        f"{_f(gr['p50'])} / {_f(gr['max'])}{unmeasured}",
        f"max <= {TARGET_GAP_RATIO:g}",
        verdict,
    )
    t.add_row(
        "self-test invoke p50: candidate / serving model",
        f"{_f(r['selftest_invoke_ms_p50'])} / {_f(r['selftest_reference_ms_p50'])} ms",
        "",
        "",
    )
    console.print(t)
    bad = [a for a in r["per_agent"] if a["outcome"] != "committed"]
    if bad:
        ft = Table("device", "outcome", "reason", "detail", title="agents that did not commit")
        for a in bad:
            state_dir = f"{s['workdir']}/agents/{a['device_id']}/state/"  # the paths in details are long and all alike
            detail = (a["detail"] or "-").replace(state_dir, "")
            ft.add_row(a["device_id"], a["outcome"] or "no answer", a["reason"] or "-", escape(detail[:300]))
        console.print(ft)
    console.print(
        f"{'[green]PASS[/green]' if r['passed'] else '[red]FAIL[/red]'}: {c}/{n} committed, "
        f"max swap gap {_f(gr['max'])} frame intervals (target <= {TARGET_GAP_RATIO:g})"
    )


def cmd_bench_ota(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.agents < 1 or not (args.fps > 0) or args.trial_frames < 1 or args.trial_s < 0 or not (args.timeout > 0):
        raise AgentError("bench-ota: --agents, --fps, --trial-frames and --timeout must be > 0, --trial-s >= 0")
    opts = BenchOptions(
        agents=args.agents,
        fps=args.fps,
        broker=args.broker,
        jitter_s=args.jitter,
        trial_frames=args.trial_frames,
        trial_s=args.trial_s,
        timeout_s=args.timeout,
        keep=args.keep,
    )
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    results = run_ota_benchmark(opts, err)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_results(Console(width=None if Console().is_terminal else 130, highlight=False), results)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return 0 if results["passed"] else 1


def register(sub: Any) -> None:
    p = sub.add_parser("bench-ota", help="benchmark an OTA model update across N real agents on this machine")
    p.add_argument("--agents", type=int, default=20, help="agent processes to start (default 20)")
    p.add_argument("--fps", type=float, default=10.0, help="synthetic camera rate of each agent (default 10)")
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")
    p.add_argument("--jitter", type=float, default=0.0, metavar="S", help="agents' notify_jitter_s (default 0: all at once)")
    p.add_argument("--trial-frames", type=int, default=30, help="update.trial_frames of the agents (default 30)")
    p.add_argument("--trial-s", type=float, default=2.0, help="update.trial_s of the agents (default 2)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="longest wait for start-up, and for the update")
    add_json_options(p, "the results")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (registry, configs, agent state and logs)")
    p.set_defaults(func=cmd_bench_ota)
