"""Home Assistant MQTT discovery: one device-based message announcing all of the device's entities.

Topic ``<discovery_prefix>/device/<device_id>/config`` (not retained: retained configs outlive
the device as ghost entities). It is sent after every connect and again whenever Home Assistant
announces itself with ``online`` on ``<discovery_prefix>/status``. Entities:

- sensors: inference fps, inference latency p50 (ms), SoC temperature (°C), outbox depth;
- per configured label: a count sensor and a binary sensor "<label> detected".

Every entity shares the device's availability topic (the will), so HA greys them out when the
agent dies. Telemetry sensors read ``<prefix>/telemetry``; label entities read the retained
``<prefix>/counts``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agent import __version__
from agent.schema import ModelRef
from agent.sinks.mqtt.topics import AVAILABLE, NOT_AVAILABLE, Topics


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text).strip("_") or "x"


def discovery_topic(discovery_prefix: str, device_id: str) -> str:
    return f"{discovery_prefix}/device/{_slug(device_id)}/config"


def discovery_payload(device_id: str, topics: Topics, labels: Sequence[str], model: ModelRef | None) -> dict[str, Any]:
    """The device-based discovery message (``dev``, ``o``, ``cmps``; each component has ``p`` and ``unique_id``)."""
    dev = _slug(device_id)
    telemetry = topics.telemetry
    cmps: dict[str, dict[str, Any]] = {}

    def sensor(key: str, name: str, template: str, **extra: Any) -> None:
        cmps[f"{dev}_{key}"] = {
            "p": "sensor",
            "unique_id": f"{dev}_{key}",
            "name": name,
            "state_topic": telemetry,
            "value_template": template,
            "state_class": "measurement",
            **extra,
        }

    # a missing value renders None (Jinja's "None"): HA's "no value"; a string like 'unknown' breaks a numeric sensor
    sensor(
        "inference_fps",
        "Inference FPS",
        "{% set v = value_json.telemetry.fps.inference %}{{ v | round(1) if v is not none else None }}",
        unit_of_measurement="fps",
    )
    sensor(
        "inference_ms",
        "Inference latency p50",
        "{% set v = value_json.telemetry.latency_ms.invoke.p50 %}{{ v | round(2) if v is not none else None }}",
        unit_of_measurement="ms",
        device_class="duration",
    )
    sensor(
        "soc_temperature",
        "SoC temperature",
        "{% set v = value_json.telemetry.soc.temperature_c %}{{ v if v is not none else None }}",
        unit_of_measurement="°C",
        device_class="temperature",
    )
    sensor(
        "outbox_depth",
        "Outbox depth",
        "{{ value_json.telemetry.transport.outbox_rows if value_json.telemetry.transport else None }}",
        entity_category="diagnostic",
    )
    for label in labels:
        key = _slug(label)
        cmps[f"{dev}_{key}_count"] = {
            "p": "sensor",
            "unique_id": f"{dev}_{key}_count",
            "name": f"{label} count",
            "state_topic": topics.counts,
            "value_template": f"{{{{ value_json.counts.get({label!r}, 0) }}}}",
            "state_class": "measurement",
        }
        cmps[f"{dev}_{key}_detected"] = {
            "p": "binary_sensor",
            "unique_id": f"{dev}_{key}_detected",
            "name": f"{label} detected",
            "state_topic": topics.counts,
            "value_template": f"{{{{ 'ON' if value_json.counts.get({label!r}, 0) > 0 else 'OFF' }}}}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "occupancy",
        }
    return {
        "dev": {
            "ids": [f"edge-agent-{dev}"],
            "name": f"edge-agent {device_id}",
            "mf": "edge-agent",
            "mdl": model.name if model else "edge-agent",
            "sw": __version__,
        },
        "o": {"name": "edge-agent", "sw": __version__},
        "cmps": cmps,
        "availability": [{"topic": topics.availability, "payload_available": AVAILABLE, "payload_not_available": NOT_AVAILABLE}],
        "qos": 1,
    }
