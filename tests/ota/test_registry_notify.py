"""``edge-registry publish --notify``: a retained QoS 1 message on the machine's broker (127.0.0.1:1883)."""

from __future__ import annotations

import json
import queue
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from agent.ota.registry_cli import main
from tests.ota._registry_helpers import MODEL_NAME, make_model

BROKER = ("127.0.0.1", 1883)


@pytest.fixture
def topic() -> Iterator[str]:
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(BROKER) != 0:
            pytest.skip("no MQTT broker on 127.0.0.1:1883 (apt-get install mosquitto)")
    name = f"test/edge-registry/{uuid.uuid4().hex}"
    yield name
    cleaner = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)  # clear the retained message we left
    cleaner.connect(*BROKER)
    cleaner.loop_start()
    cleaner.publish(name, b"", qos=1, retain=True).wait_for_publish(5)
    cleaner.disconnect()
    cleaner.loop_stop()


def retained(topic: str, timeout: float = 5.0) -> tuple[dict[str, Any], bool]:
    """Subscribe after the fact: only a retained message can arrive."""
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, msg: got.put(msg)
    client.connect(*BROKER)
    client.loop_start()
    try:
        msg = got.get(timeout=timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return json.loads(msg.payload), bool(msg.retain)


def test_publish_notify_leaves_a_retained_fleet_message(tmp_path: Path, topic: str) -> None:
    reg = tmp_path / "registry"
    assert main(["init", str(reg)]) == 0
    model, manifest = make_model(tmp_path / "build", "1.4.0")
    argv = ["--registry", str(reg), "publish", str(model), "--manifest", str(manifest), "--channel", "canary", "--rollout", "25"]
    assert main([*argv, "--notify", "--broker", "127.0.0.1:1883", "--fleet-topic", topic]) == 0
    payload, was_retained = retained(topic)
    assert was_retained
    assert set(payload) == {"model", "version", "channel", "rollout", "published_at"}
    assert (payload["model"], payload["version"], payload["channel"], payload["rollout"]) == (MODEL_NAME, "1.4.0", "canary", 25)

    promote = ["--registry", str(reg), "promote", MODEL_NAME, "1.4.0", "--rollout", "100"]
    assert main([*promote, "--notify", "--fleet-topic", topic]) == 0
    payload, _ = retained(topic)
    assert (payload["version"], payload["rollout"]) == ("1.4.0", 100)


def test_an_unreachable_broker_is_a_failure_after_publishing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = tmp_path / "registry"
    assert main(["init", str(reg)]) == 0
    model, manifest = make_model(tmp_path / "build", "1.0")
    argv = ["--registry", str(reg), "publish", str(model), "--manifest", str(manifest)]
    assert main([*argv, "--notify", "--broker", f"127.0.0.1:{port}", "--fleet-topic", "test/never"]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert main([*argv, "--notify", "--broker", "127.0.0.1:notaport"]) == 2
