"""Real Mosquitto brokers (one per test, on a free port), subscribers, and agents to point at them.

Tests that stop or kill a broker own it: nothing here touches the machine's broker on 1883.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.backends.base import BackendOptions
from agent.demo import demo_model_path
from agent.detector import load_detector
from agent.pipeline import Pipeline
from agent.sinks.base import AgentContext
from agent.sinks.mqtt import MqttSink, MqttSinkConfig
from agent.sources.synthetic import SyntheticConfig, SyntheticSource
from tests.waiting import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

if not Path(MOSQUITTO).exists():  # scripts/test.sh installs it; say so rather than fail obscurely
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)


class Broker:
    """A private mosquitto: ``start``, ``stop`` (SIGTERM, saves persistence), ``kill`` (SIGKILL), ``start`` again."""

    def __init__(
        self, workdir: Path, *, persistence: bool = False, listener_extra: str = "", port: int | None = None, more: str = ""
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            listener_extra or "allow_anonymous true",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            f"log_dest file {workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:  # run as root, mosquitto drops to user "mosquitto", who cannot read pytest's tmp dirs
            lines.append("user root")
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
        self.conf.write_text("\n".join(lines) + "\n" + more)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_until(self._accepting, 10):
            raise RuntimeError(f"mosquitto did not start on {self.port}: {(self.workdir / 'mosquitto.log').read_text()[-2000:]}")
        return self

    def _accepting(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at_ns: int
    props: Any = None

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """A paho client that records everything under ``topics``; optionally a persistent MQTT 5 session."""

    port: int
    topics: tuple[str, ...]
    client_id: str = field(default_factory=lambda: f"test-sub-{os.getpid()}-{time.monotonic_ns()}")
    persistent: bool = False
    host: str = "127.0.0.1"
    tls: Any = None
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.connected = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        if self.username:
            c.username_pw_set(self.username, self.password)
        if self.tls is not None:
            c.tls_set_context(self.tls)
        c.reconnect_delay_set(0.1, 0.5)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = lambda *_: self.connected.clear()
        self.client = c
        props = Properties(PacketTypes.CONNECT)
        if self.persistent:
            props.SessionExpiryInterval = 3600
        c.connect_async(self.host, self.port, keepalive=10, clean_start=not self.persistent, properties=props)
        c.loop_start()
        assert self.connected.wait(10), "test subscriber could not connect"

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            return
        if not (self.persistent and flags.session_present):
            for t in self.topics:
                client.subscribe(t, qos=1)
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic_ns(), msg.properties))

    def of(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith("/" + suffix) or m.topic == suffix]

    def wait_for(self, suffix: str, count: int = 1, timeout: float = 10) -> list[Received]:
        wait_until(lambda: len(self.of(suffix)) >= count, timeout)
        return self.of(suffix)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for s in made:
        s.close()


def agent_config(tmp: Path, port: int, device_id: str = "dev1", *, fps: float = 20, jsonl: bool = False, **mqtt: Any) -> Path:
    """A YAML config: synthetic source, the mqtt sink on ``port`` (plus a jsonl oracle of every result)."""
    sink: dict[str, Any] = {"type": "mqtt", "port": port, "publish": "every_frame", "telemetry_interval_s": 1}
    sink["reconnect"] = {"min_delay_s": 0.2, "max_delay_s": 1.0}
    sink.update(mqtt)
    sinks: list[dict[str, Any]] = [sink]
    if jsonl:
        sinks.append({"type": "jsonl", "path": str(tmp / "results.jsonl")})
    doc = {
        "device_id": device_id,
        "state_dir": str(tmp / "state"),
        "model": {"threads": 1},
        "source": {"type": "synthetic", "fps": fps, "seed": 3},
        "sinks": sinks,
    }
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class AgentProcess:
    """``edge-agent run -c config`` as a real subprocess."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._fh = log.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(config)], cwd=REPO, stdout=self._fh, stderr=self._fh, env=env
        )

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._fh.close()
        return rc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._fh.close()

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    made: list[AgentProcess] = []
    yield made
    for a in made:
        if a.alive():
            a.kill()


def results_from_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith('{"event"')]


def dedupe(messages: list[Received]) -> list[dict[str, Any]]:
    """First occurrence of each msg_id, in arrival order."""
    seen: set[str] = set()
    out = []
    for m in messages:
        doc = m.json()
        if doc["msg_id"] not in seen:
            seen.add(doc["msg_id"])
            out.append(doc)
    return out


# ---- the sink in-process, on a real pipeline -------------------------------------------------


def make_sink(state_dir: Path, port: int, device_id: str = "dev1", config_path: Path | None = None, **overrides: Any) -> MqttSink:
    fields: dict[str, Any] = {"port": port, "publish": "every_frame", "reconnect": {"min_delay_s": 0.2, "max_delay_s": 1.0}}
    fields.update(overrides)
    sink = MqttSink(MqttSinkConfig(**fields))
    sink.bind(AgentContext(device_id, state_dir, config_path))
    return sink


class RunningPipeline:
    """The demo detector on a synthetic camera, feeding ``sinks``, on a background thread."""

    def __init__(self, sinks: list[Any], *, fps: float = 30, frames: int | None = None, seed: int = 3) -> None:
        self.detector = load_detector(demo_model_path("tflite-int8"), BackendOptions(threads=1))
        self.source = SyntheticSource(SyntheticConfig(fps=fps, frames=frames, seed=seed))
        self.pipeline = Pipeline(self.detector, self.source, sinks)
        self.results: list[Any] = []  # every result, in order (the oracle)
        self.pipeline.frame_hooks.append(self.results.append)
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except Exception as exc:  # noqa: BLE001 - re-raised by stop()/wait() on the test's thread
            self.error = exc

    def stop(self, timeout: float = 30) -> None:
        self.pipeline.request_stop()
        self.thread.join(timeout)
        self.detector.close()
        if self.error is not None:
            raise self.error

    def wait(self, timeout: float = 60) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "pipeline did not finish"
        self.detector.close()
        if self.error is not None:
            raise self.error
