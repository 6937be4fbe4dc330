"""End to end over the real broker: `edge-registry publish --notify` -> a running agent checks at once,
installs, and reports every phase on its retained status and events; `edge-fleet rollout` counts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from agent.ota.httpserver import start_server
from agent.ota.registry_cli import main as registry_main
from agent.ota.repository import Registry
from tests.mqtt.conftest import Subscriber, wait_until
from tests.ota.conftest import DEMO_NAME, demo_files

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_notify_drives_an_update_reported_over_mqtt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = uuid.uuid4().hex[:8]
    device, root, fleet_topic = f"ota-{run}", f"ota-test-{run}", f"ota-test-{run}/fleet/updates"
    registry = Registry.init(tmp_path / "registry")
    sub = Subscriber(1883, (f"{root}/{device}/#",))
    with start_server(registry.dir / "repository") as server:
        cfg = {
            "device_id": device,
            "state_dir": str(tmp_path / "state"),
            "model": {"threads": 1},
            "source": {"type": "synthetic", "fps": 15, "width": 320, "height": 240},
            "sinks": [{"type": "mqtt", "port": 1883, "topic_prefix": f"{root}/{device}", "telemetry_interval_s": 1}],
            "update": {
                "enabled": True,
                "url": server.url,
                "trusted_root": str(registry.trusted_root_path),
                "fleet_topic": fleet_topic,
                "notify_jitter_s": 0,
                "check_on_start": False,
                "trial_frames": 15,
                "trial_s": 0.5,
            },
        }
        (tmp_path / "agent.yaml").write_text(yaml.safe_dump(cfg))
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "agent.yaml")],
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if k != "EDGE_AGENT_OTA_FAULT"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert wait_until(lambda: any(m.json().get("update", {}).get("state") == "idle" for m in sub.of("status")), 30), (
                "the agent never reported an idle updater"
            )
            model, manifest = demo_files()
            t0 = time.monotonic()
            code = registry_main(
                ["--registry", str(registry.dir), "publish", str(model), "--manifest", str(manifest), "--model-version", "1.1.0",
                 "--notify", "--broker", "127.0.0.1:1883", "--fleet-topic", fleet_topic]
            )  # fmt: skip
            assert code == 0
            committed = lambda: [m for m in sub.of("events") if m.json().get("data", {}).get("phase") == "committed"]  # noqa: E731
            assert wait_until(lambda: bool(committed()), 60), [m.payload[:200] for m in sub.of("events")]
            took = time.monotonic() - t0
            phases = [m.json()["data"]["phase"] for m in sub.of("events") if m.json().get("event") == "update"]
            assert [p for p in phases if p != "downloading"][-4:] == ["verifying", "staged", "trial", "committed"], phases
            data = committed()[0].json()["data"]
            assert data["version"] == "1.1.0" and data["swap_gap_ms"] <= 2 * data["frame_interval_ms"], data
            assert wait_until(
                lambda: (s := sub.of("status")[-1].json())["update"]["state"] == "committed" and s["model"]["version"] == "1.1.0",
                15,
            )
            assert took < 30  # a notified check starts at once, not at the hourly schedule

            from agent.ota.fleet_cli import main as fleet_main

            capsys.readouterr()
            assert fleet_main(["rollout", DEMO_NAME, "1.1.0", "--topic-root", root, "--once", "--wait", "2", "--json"]) == 0
            summary = json.loads(capsys.readouterr().out)
            assert summary["counts"]["committed"] == 1 and summary["devices"]["committed"] == [device], summary
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            sub.close()
            from paho.mqtt import publish as mqtt_publish

            for suffix in ("status", "availability", "counts"):
                mqtt_publish.single(f"{root}/{device}/{suffix}", b"", retain=True, hostname="127.0.0.1", port=1883)
            mqtt_publish.single(fleet_topic, b"", retain=True, hostname="127.0.0.1", port=1883)
