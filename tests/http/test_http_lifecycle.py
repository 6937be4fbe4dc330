"""The API across the agent's life: readiness when the camera ends, model swaps, and `edge-agent run` wiring."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from conftest import TOKEN, free_port, start_agent, wait_until

from agent.backends.base import BackendOptions
from agent.demo import demo_model_path, selftest_dir
from agent.detector import load_detector
from agent.sources.synthetic import SyntheticConfig

REPO = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_readyz_says_why_when_the_source_ends(tmp_path: Path) -> None:
    with start_agent(tmp_path, SyntheticConfig(fps=30.0, frames=15)) as agent, agent.client(None) as c:
        assert wait_until(lambda: not agent.thread.is_alive(), 15), "the pipeline should stop when the source ends"
        r = c.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["ready"] is False and body["reasons"]
        assert any("not delivering" in reason or "ago" in reason for reason in body["reasons"]), body
        assert c.get("/healthz").status_code == 200  # alive, just not ready
        with agent.client() as authed:
            shot = authed.get("/v1/snapshot")
            assert shot.status_code == 503 and shot.json()["error"] == "no_frame"


def test_detect_follows_a_model_swap(tmp_path: Path) -> None:
    with start_agent(tmp_path, snapshot_timeout_s=1.0) as agent, agent.client() as c:
        jpeg = (selftest_dir() / "scene_03.jpg").read_bytes()
        before = c.post("/v1/detect", content=jpeg, headers={"Content-Type": "image/jpeg"}).json()
        assert before["model"]["name"] == "demo-shapes-tflite-int8"
        other = load_detector(demo_model_path("onnx-int8"), BackendOptions(threads=1))
        agent.pipeline.swap_detector(other)
        assert wait_until(lambda: agent.pipeline.detector is other, 10)
        after = c.post("/v1/detect", content=jpeg, headers={"Content-Type": "image/jpeg"}).json()
        assert after["model"]["name"] == "demo-shapes-onnx-int8"
        assert after["detections"], "the swapped-in model finds the shapes too"
        assert c.get("/v1/status").json()["model"]["name"] == "demo-shapes-onnx-int8"
        agent.pipeline.request_stop()
        agent.thread.join(timeout=10)
        other.close()


def test_edge_agent_run_serves_the_api_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "token").write_text(TOKEN)
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
        "http": {"enabled": True, "port": port, "token_file": str(tmp_path / "token")},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "cfg.yaml")], cwd=REPO, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:

            def ready() -> bool:
                try:
                    return c.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_until(ready, 30, 0.2)
            assert c.get("/v1/status").status_code == 401
            assert c.get("/v1/status", headers=AUTH).json()["state"] == "running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_token_file_stops_the_agent_with_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("short\n")
    cfg = {"http": {"enabled": True, "port": free_port(), "token_file": str(tmp_path / "token")}, "state_dir": str(tmp_path)}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "cfg.yaml"), "--duration", "5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "http.token_file" in r.stderr and "16 characters" in r.stderr
