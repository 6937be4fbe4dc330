"""The mqtt sink's config: discovered by the registry, every field described, protocol 3.1.1 works."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from agent.config import AgentConfig
from agent.sinks import SINKS
from agent.sinks.mqtt import MqttSink, MqttSinkConfig

from .conftest import Broker, RunningPipeline, Subscriber, make_sink, wait_until


def test_registry_and_union() -> None:
    assert SINKS.get("mqtt") is MqttSink and MqttSink.config_model is MqttSinkConfig
    assert get_args(MqttSinkConfig.model_fields["type"].annotation) == ("mqtt",)
    cfg = AgentConfig(sinks=[{"type": "mqtt", "protocol": 5, "host": "broker.lan"}])
    assert isinstance(cfg.sinks[0], MqttSinkConfig) and cfg.sinks[0].protocol == "5"
    assert MqttSinkConfig(protocol="mqttv311").protocol == "3.1.1"
    assert MqttSinkConfig(tls={"enabled": True}).effective_port == 8883 and MqttSinkConfig().effective_port == 1883


def test_every_field_has_a_description() -> None:
    schema = MqttSinkConfig.model_json_schema()
    missing = []

    def walk(node: dict, where: str) -> None:
        for name, prop in node.get("properties", {}).items():
            if not prop.get("description"):
                missing.append(f"{where}.{name}")
        for key, sub in node.get("$defs", {}).items():
            walk(sub, key)

    walk(schema, "MqttSinkConfig")
    assert not missing, missing


def test_mqtt_311(broker: Broker, tmp_path: Path, subscribers: list) -> None:
    sub = Subscriber(broker.port, ("edge/v311/#",))
    subscribers.append(sub)
    sink = make_sink(tmp_path / "state", broker.port, "v311", protocol="3.1.1")
    run = RunningPipeline([sink], fps=30)
    try:
        assert wait_until(lambda: len(sub.of("detections")) >= 5, 10)
    finally:
        run.stop()
    assert [m.payload for m in sub.of("availability")][-1] == b"offline"
