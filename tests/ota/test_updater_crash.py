"""Crash safety: the real agent process is SIGKILLed right after each journal step, then restarted.

The restarted agent must serve a valid model (old or new, never a partial file), settle the
interrupted update the right way, and report it. The kill is real (the agent SIGKILLs itself at
the step named by EDGE_AGENT_OTA_FAULT, agent/ota/updater.py), like Mender's power-cut tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.ota.httpserver import RangeRequestHandler, start_server
from agent.ota.repository import Registry
from tests.ota.conftest import DEMO_NAME, demo_files

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


class Recording(RangeRequestHandler):
    ranges: list[str | None] = []  # noqa: RUF012 - one list for the server's handler instances on purpose

    def copy_body(self, source: Any, length: int) -> None:
        if "/targets/models/" in self.path:
            Recording.ranges.append(self.headers.get("Range"))
        super().copy_body(source, length)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Agent:
    def __init__(self, tmp: Path, url: str, root: Path) -> None:
        self.out = tmp / "out.jsonl"
        self.config = tmp / "agent.yaml"
        self.state = tmp / "state"
        cfg = {
            "device_id": "crash-1",
            "state_dir": str(self.state),
            "model": {"threads": 1},
            "source": {"type": "synthetic", "fps": 20, "width": 320, "height": 240},
            "sinks": [{"type": "jsonl", "path": str(self.out), "events": True}],
            "update": {
                "enabled": True,
                "url": url,
                "trusted_root": str(root),
                "fleet_topic": None,
                "trial_frames": 20,
                "trial_s": 1.0,
                "check_interval_s": 3600,
            },
        }
        self.config.write_text(yaml.safe_dump(cfg))

    def start(self, fault: str | None = None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "EDGE_AGENT_OTA_FAULT"}
        if fault:
            env["EDGE_AGENT_OTA_FAULT"] = fault
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(self.config)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def lines(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            with contextlib.suppress(ValueError):  # the last line of a killed process may be cut short
                out.append(json.loads(line))
        return out

    def updates(self, since: int = 0) -> list[dict[str, Any]]:
        return [d for d in self.lines()[since:] if d.get("event") == "update"]

    def wait_update(self, phases: set[str], since: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for d in self.updates(since):
                if d["phase"] in phases:
                    return d
            time.sleep(0.1)
        raise AssertionError(f"no update event in {phases} after {timeout} s; saw {[d['phase'] for d in self.updates(since)]}")


@pytest.fixture
def setup(tmp_path: Path):
    registry = Registry.init(tmp_path / "registry")
    model, manifest = demo_files("tflite-fp32")  # different bytes (1.1 MB) under the followed model's name
    registry.publish(model, manifest, name=DEMO_NAME, version="1.1.0")
    Recording.ranges = []
    with start_server(registry.dir / "repository", handler_class=Recording) as server:
        agent = Agent(tmp_path, server.url, registry.trusted_root_path)
        yield agent, sha256(demo_files("tflite-int8")[0]), sha256(model)


STEPS = ["downloading", "verified", "staged", "swapping", "trial", "committed"]


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_every_step_restarts_into_a_valid_model(setup, step):
    agent, old_sha, new_sha = setup
    first = agent.start(fault=f"kill@{step}")
    assert first.wait(90) == -signal.SIGKILL, "the fault did not fire"
    killed_at = len(agent.lines())

    second = agent.start()
    try:
        if step in ("swapping", "trial"):
            # the candidate may have served: the restart is an implicit rollback, reported, and not retried
            event = agent.wait_update({"rolled_back"}, killed_at)
            assert event["reason"] == "restarted_during_trial" and event["version"] == "1.1.0"
            idle = agent.wait_update({"idle", "committed", "downloading"}, killed_at)
            assert idle["phase"] == "idle" and idle["reason"] == "failed_before", idle
            expect = old_sha
        elif step == "committed":
            expect = new_sha
        else:
            # nothing served yet: the next check resumes or reuses what is on disk and commits
            note = agent.wait_update({"idle"}, killed_at)
            assert note["reason"] == f"interrupted_at_{step}"
            done = agent.wait_update({"committed", "failed", "rolled_back"}, killed_at)
            assert done["phase"] == "committed", done
            expect = new_sha
        deadline = time.monotonic() + 30
        while True:  # the second run serves the expected model
            results = [d for d in agent.lines()[killed_at:] if "frame_id" in d]
            if results and results[-1]["model"]["sha256"] == expect and len(results) > 5:
                break
            assert time.monotonic() < deadline, f"still serving {results[-1]['model'] if results else None}"
            time.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    # never a partial or unverified file: every result in both runs came from one of the two signed models
    shas = {d["model"]["sha256"] for d in agent.lines() if "frame_id" in d}
    assert shas <= {old_sha, new_sha}, shas
    if step == "downloading":
        assert any(r and r.startswith("bytes=") and r != "bytes=0-" for r in Recording.ranges), Recording.ranges
    if step in ("swapping", "trial"):
        assert not any(d["phase"] == "committed" for d in agent.updates(killed_at))
    pointer = agent.state / "ota" / "current.json"
    if expect == new_sha:
        assert json.loads(pointer.read_text())["version"] == "1.1.0"
    else:
        assert not pointer.exists()
