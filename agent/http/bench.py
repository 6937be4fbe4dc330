"""``edge-agent bench-http``: /v1/detect throughput and latency while the camera pipeline runs.

Starts the agent in this process (demo model, synthetic camera, the API on a loopback port),
then measures in turn: the pipeline alone (baseline fps); /v1/detect at fixed request rates
(open loop: requests leave on a schedule, not when the previous one returns), with the
pipeline's fps meanwhile; and /v1/detect as fast as one client can go. The headline is the
pipeline's fps drop at 5 req/s (target <= 10 %).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.cli_conventions import add_json_options, run_with_json_output

TARGET_RATE = 5.0
TARGET_DROP_PERCENT = 10.0


@dataclass
class Phase:
    name: str
    seconds: float
    pipeline_fps: float
    fps_drop_percent: float | None = None
    requests: int = 0
    failed: int = 0
    req_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


def _percentile(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    return sorted_ms[min(len(sorted_ms) - 1, max(0, math.ceil(q / 100 * len(sorted_ms)) - 1))]


class _Client:
    def __init__(self, port: int, token: str, body: bytes) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}
        self._body = body

    def detect(self) -> tuple[float, bool]:
        """One request: (latency ms, answered 200). Reconnects once if the server closed an idle keep-alive."""
        for attempt in (1, 2):
            t0 = time.perf_counter()
            try:
                self._conn.request("POST", "/v1/detect", self._body, self._headers)
                resp = self._conn.getresponse()
                resp.read()
                return (time.perf_counter() - t0) * 1000.0, resp.status == 200
            except (OSError, http.client.HTTPException):
                self._conn.close()
                if attempt == 2:
                    return (time.perf_counter() - t0) * 1000.0, False
        raise AssertionError("unreachable")


def _measure(name: str, frames: Any, seconds: float, load: Any | None) -> Phase:
    """Pipeline fps over ``seconds`` while ``load(stop_event, latencies, failures)`` runs on a thread."""
    latencies: list[float] = []
    failures = [0]
    stop = threading.Event()
    worker = threading.Thread(target=load, args=(stop, latencies, failures), daemon=True) if load else None
    f0, t0 = frames(), time.monotonic()
    if worker:
        worker.start()
    time.sleep(seconds)
    f1, t1 = frames(), time.monotonic()
    stop.set()
    if worker:
        worker.join(timeout=35)
    elapsed = t1 - t0
    lat = sorted(latencies)
    phase = Phase(name, round(elapsed, 2), (f1 - f0) / elapsed)
    if load:
        phase.requests, phase.failed = len(lat), failures[0]
        phase.req_per_s = len(lat) / elapsed
        phase.p50_ms, phase.p99_ms = _percentile(lat, 50), _percentile(lat, 99)
        phase.max_ms = lat[-1] if lat else None
    return phase


def _paced(client: _Client, rate: float) -> Any:
    def load(stop: threading.Event, latencies: list[float], failures: list[int]) -> None:
        interval, next_at = 1.0 / rate, time.monotonic()
        while not stop.is_set():
            ms, ok = client.detect()
            latencies.append(ms)
            failures[0] += not ok
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))

    return load


def _flat_out(client: _Client) -> Any:
    def load(stop: threading.Event, latencies: list[float], failures: list[int]) -> None:
        while not stop.is_set():
            ms, ok = client.detect()
            latencies.append(ms)
            failures[0] += not ok

    return load


def run_http_benchmark(
    variant: str, camera_fps: float, seconds: float, rates: list[float], threads: int | None, json_path: Path | None
) -> int:
    from rich.console import Console
    from rich.table import Table

    from agent.backends.base import BackendOptions, default_threads
    from agent.config import HttpConfig
    from agent.demo import demo_model_path, selftest_dir
    from agent.detector import load_detector
    from agent.http.server import ApiServer
    from agent.pipeline import Pipeline
    from agent.sinks.base import AgentContext
    from agent.sources.synthetic import SyntheticConfig, SyntheticSource

    console = Console(width=max(Console().width, 110))
    tmp = Path(tempfile.mkdtemp(prefix="edge-agent-bench-http-"))
    token = "bench-" + "0" * 26
    (tmp / "token").write_text(token)
    detector = load_detector(demo_model_path(variant), BackendOptions(threads=threads or default_threads()))
    source = SyntheticSource(SyntheticConfig(fps=camera_fps, replay=32))
    pipeline = Pipeline(detector, source, [])
    server = ApiServer(
        HttpConfig(enabled=True, port=_free_port(), token_file=tmp / "token"), pipeline, AgentContext("bench", tmp)
    )
    server.start()
    runner = threading.Thread(target=pipeline.run, name="bench-pipeline", daemon=True)
    runner.start()
    client = _Client(server.port, token, (selftest_dir() / "scene_00.jpg").read_bytes())
    frames = lambda: pipeline.stats.frames  # noqa: E731
    phases: list[Phase] = []
    try:
        with console.status("warming up"):
            time.sleep(2.0)
            for _ in range(5):
                client.detect()
        plan: list[tuple[str, Any]] = [("pipeline alone", None)]
        plan += [(f"detect at {r:g} req/s", _paced(client, r)) for r in rates]
        plan.append(("detect flat out (1 client)", _flat_out(client)))
        for name, load in plan:
            with console.status(f"{name} ({seconds:g} s)"):
                phases.append(_measure(name, frames, seconds, load))
    finally:
        pipeline.request_stop()
        runner.join(timeout=10)
        server.stop()
        detector.close()
    base = phases[0].pipeline_fps
    for p in phases[1:]:
        p.fps_drop_percent = 100.0 * (base - p.pipeline_fps) / base if base else None
    table = Table(title=f"/v1/detect with the pipeline running ({variant}, camera {camera_fps:g} fps, 640x480 JPEG uploads)")
    for col in ("phase", "pipeline fps", "fps drop", "requests", "req/s", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="left" if col == "phase" else "right")

    def f(v: float | None, d: int = 1) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    for p in phases:
        drop = "-" if p.fps_drop_percent is None else f"{p.fps_drop_percent:.1f} %"
        req = f"{p.requests}" + (f" ({p.failed} failed)" if p.failed else "") if p.requests else "-"
        table.add_row(p.name, f(p.pipeline_fps), drop, req, f(p.req_per_s), f(p.p50_ms, 2), f(p.p99_ms, 2), f(p.max_ms, 2))
    console.print(table)
    at_target = next((p for p in phases if p.name == f"detect at {TARGET_RATE:g} req/s"), None)
    ok = True
    if at_target is not None and at_target.fps_drop_percent is not None:
        ok = at_target.fps_drop_percent <= TARGET_DROP_PERCENT and at_target.requests > 0 and at_target.failed == 0
        verdict = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
        console.print(
            f"{verdict}: pipeline fps drop at {TARGET_RATE:g} req/s is {at_target.fps_drop_percent:.1f} % (target <= 10 %)"
        )
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(p) for p in phases], indent=2))
    return 0 if ok else 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cmd_bench_http(args: argparse.Namespace) -> int:
    return run_with_json_output(
        args, lambda path: run_http_benchmark(args.variant, args.camera_fps, args.seconds, args.rates, args.threads, path)
    )


def register(sub: Any) -> None:
    p = sub.add_parser("bench-http", help="benchmark POST /v1/detect while the camera pipeline runs")
    p.add_argument("--variant", default="tflite-int8", help="demo model variant (default: tflite-int8)")
    p.add_argument("--camera-fps", type=float, default=15.0, help="synthetic camera rate; 0 = as fast as inference goes")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--rates", type=float, nargs="+", default=[TARGET_RATE], help="paced request rates to test (req/s)")
    p.add_argument("--threads", type=int, help="inference threads (default: cores - 1)")
    add_json_options(p, "the phases")
    p.set_defaults(func=cmd_bench_http)
