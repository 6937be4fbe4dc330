"""edge-fleet against a real broker: retained device messages in, tables and JSON out.

The messages are built with the agent's own payload models and stand in for agents (the lead's
integration tests run real ones). Each test uses its own topic root and clears what it retained.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.ota.fleet_cli import main
from tests.mqtt.conftest import REPO, Broker, free_port

from ._fleet_helpers import event_payload, status_payload, telemetry_payload

WAIT = "0.6"  # seconds edge-fleet collects retained state: the broker sends it right after SUBACK


@pytest.fixture(scope="module")
def broker_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The machine's broker on 1883; a private mosquitto when there is none."""
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
        yield 1883
    except OSError:
        b = Broker(tmp_path_factory.mktemp("fleet-broker")).start()
        yield b.port
        b.stop()


@dataclass
class FakeFleet:
    """Publishes retained device messages under a unique root; ``clear`` empties every topic it retained."""

    port: int
    root: str = field(default_factory=lambda: f"test-fleet-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        self.retained: set[str] = set()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-{self.root}", protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def publish(self, device: str, suffix: str, payload: bytes) -> None:
        topic = f"{self.root}/{device}/{suffix}"
        self.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        self.retained.add(topic)

    def clear(self) -> None:
        for topic in self.retained:
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def args(self, *extra: str) -> list[str]:
        return [*extra, "--broker", f"127.0.0.1:{self.port}", "--topic-root", self.root]


@pytest.fixture
def fleet(broker_port: int) -> Iterator[FakeFleet]:
    f = FakeFleet(broker_port)
    yield f
    f.clear()


def populate(f: FakeFleet) -> float:
    """Five devices at different points of the ssd 1.1.0 rollout. Telemetry is retained here only so
    ``--once`` sees it without a timing race; agents publish it live, which the view reads the same way."""
    now = time.time()
    f.publish("cam-a", "status", status_payload("cam-a", now - 5, root=f.root, model=("ssd", "1.1.0")))
    f.publish("cam-a", "availability", b"online")
    f.publish("cam-a", "telemetry", telemetry_payload("cam-a", now - 3, fps=14.5, capture_p95=81.5, temperature_c=55.0))
    trial = {"state": "trial", "since": now - 10, "model": "ssd", "version": "1.1.0"}
    f.publish("cam-b", "status", status_payload("cam-b", now - 5, root=f.root, model=("ssd", "1.1.0"), update=trial))
    f.publish("cam-b", "availability", b"online")
    rolled = {"state": "rolled_back", "since": now - 30, "model": "ssd", "version": "1.1.0", "reason": "trial_failed"}
    f.publish("cam-c", "status", status_payload("cam-c", now - 5, root=f.root, update=rolled))
    f.publish("cam-c", "availability", b"online")
    failed = {"state": "failed", "since": now - 30, "model": "ssd", "version": "1.1.0", "reason": "hash_mismatch"}
    f.publish("cam-d", "status", status_payload("cam-d", now - 5, root=f.root, update=failed))
    f.publish("cam-d", "availability", b"online")
    f.publish("cam-e", "status", status_payload("cam-e", now - 900, root=f.root))
    f.publish("cam-e", "availability", b"offline")
    f.publish("fleet", "updates", json.dumps({"model": "ssd", "version": "1.1.0", "channel": "stable"}).encode())
    f.publish("cam-f", "status", b"{not json")  # a broken device: counted, skipped
    return now


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "agent.ota.fleet_cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


def test_status_once_json_lists_devices(fleet: FakeFleet) -> None:
    now = populate(fleet)
    proc = run_cli(*fleet.args("status", "--once", "--wait", WAIT, "--json"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["device_id"]: r for r in json.loads(proc.stdout)}
    assert sorted(rows) == ["cam-a", "cam-b", "cam-c", "cam-d", "cam-e"]  # not "fleet", not the broken cam-f
    a = rows["cam-a"]
    assert (a["online"], a["model"], a["version"], a["update_state"]) == (True, "ssd", "1.1.0", "idle")
    assert (a["fps"], a["p95_ms"], a["temperature_c"], a["stale"]) == (14.5, 81.5, 55.0, False)
    assert a["last_seen"] == pytest.approx(now - 3) and 2 < a["age_s"] < 15
    assert (rows["cam-b"]["update_state"], rows["cam-b"]["update_version"]) == ("trial", "1.1.0")
    assert (rows["cam-d"]["update_state"], rows["cam-d"]["update_reason"], rows["cam-d"]["version"]) == (
        "failed",
        "hash_mismatch",
        "1.0.0",
    )
    assert rows["cam-e"]["online"] is False and rows["cam-e"]["fps"] is None


def test_status_once_table(fleet: FakeFleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # piped output gets a wide table, one line per device
    populate(fleet)
    assert main(fleet.args("status", "--once", "--wait", WAIT)) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert list(lines) == ["cam-a", "cam-b", "cam-c", "cam-d", "cam-e"]
    assert "ssd 1.1.0" in lines["cam-a"] and "14.5" in lines["cam-a"] and "81.5" in lines["cam-a"]
    assert "rolled_back 1.1.0 (trial_failed)" in lines["cam-c"]
    assert "offline" in lines["cam-e"]
    assert "1 malformed message(s) skipped" in out


def test_rollout_counts(fleet: FakeFleet, capsys: pytest.CaptureFixture[str]) -> None:
    populate(fleet)
    assert main(fleet.args("rollout", "ssd", "1.1", "--wait", WAIT, "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["model"], doc["version"], doc["total"]) == ("ssd", "1.1", 5)
    assert doc["counts"] == {
        "committed": 1,
        "trial": 1,
        "failed": 2,
        "updating": 0,
        "other_version": 0,
        "other_model": 0,
        "offline": 1,
    }
    assert doc["reasons"] == {"hash_mismatch": 1, "trial_failed": 1}
    assert doc["devices"]["failed"] == ["cam-c", "cam-d"]

    assert main(fleet.args("rollout", "ssd", "1.1.0", "--once", "--wait", WAIT)) == 0
    table = capsys.readouterr().out
    assert "rollout of ssd 1.1.0: 5 device(s)" in table
    assert "hash_mismatch: 1" in table and "trial_failed: 1" in table


def test_live_status_sees_later_messages_and_exits_0_on_ctrl_c(fleet: FakeFleet) -> None:
    fleet.publish("cam-a", "availability", b"online")
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.ota.fleet_cli", *fleet.args("status", "-v")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err_lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [err_lines.put(line) for line in proc.stderr or ()], daemon=True).start()
    deadline, subscribed = time.monotonic() + 15, set()
    while len(subscribed) < 4 and time.monotonic() < deadline:  # the -v log says when each SUBACK came back
        with contextlib.suppress(queue.Empty):
            line = err_lines.get(timeout=0.5)
            if "subscribed to" in line:
                subscribed.add(line)
    assert len(subscribed) == 4, "edge-fleet did not subscribe"
    live = telemetry_payload("cam-a", time.time(), fps=9.5)
    fleet.client.publish(f"{fleet.root}/cam-a/telemetry", live, qos=1).wait_for_publish(5)  # live, not retained
    data = {"phase": "downloading", "model": "ssd", "version": "1.1.0", "progress": 0.4}
    fleet.client.publish(f"{fleet.root}/cam-a/events", event_payload("cam-a", time.time(), "update", data), qos=1)
    time.sleep(1.0)  # delivery plus a refresh (2/s)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    err = "".join(err_lines.queue)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    cam_a = [line for line in out.splitlines() if "cam-a" in line]  # rich Live prints its last frame when it stops
    assert cam_a and "9.5" in cam_a[-1] and "online" in cam_a[-1] and "downloading → 1.1.0 40%" in cam_a[-1]


def test_unreachable_broker_exit_1_names_it() -> None:
    port = free_port()
    proc = run_cli("status", "--once", "--broker", f"127.0.0.1:{port}")
    assert proc.returncode == 1
    assert f"127.0.0.1:{port}" in proc.stderr and "cannot reach" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert main(["rollout", "ssd", "1.0", "--broker", f"127.0.0.1:{port}"]) == 1


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["rollout", "ssd", "one.two"], "VERSION"),
        (["rollout", "", "1.0"], "MODEL"),
        (["rollout", "ssd"], "VERSION"),
        (["rollout", "ssd", "1.0", "--watch", "--json"], "--json"),
        (["status", "--json"], "--json"),
        (["status", "--once", "--wait", "0"], "--wait"),
        (["status", "--once", "--broker", "localhost:http"], "--broker"),
        (["status", "--once", "--topic-root", "edge/#"], "--topic-root"),
        (["status", "--once", "--password-file", "/nonexistent"], "--password-file"),
        (["status", "--once", "--username", "op", "--password-file", "/nonexistent"], "--password-file"),
        (["deploy"], "deploy"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert named in capsys.readouterr().err


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="needs mosquitto_passwd (mosquitto package)")
def test_username_and_password_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "operator", "s3cret"], check=True, capture_output=True)
    b = Broker(tmp_path / "broker", listener_extra=f"allow_anonymous false\npassword_file {passwd}").start()
    try:
        good, bad = tmp_path / "good.pw", tmp_path / "bad.pw"
        good.write_text("s3cret\n")
        bad.write_text("wrong\n")
        base = ["status", "--once", "--wait", "0.2", "--json", "--broker", f"127.0.0.1:{b.port}", "--username", "operator"]
        assert main([*base, "--password-file", str(good)]) == 0
        assert json.loads(capsys.readouterr().out) == []
        assert main([*base, "--password-file", str(bad)]) == 1
        err = capsys.readouterr().err
        assert f"127.0.0.1:{b.port} refused the connection" in err and "s3cret" not in err and "wrong" not in err
    finally:
        b.stop()
