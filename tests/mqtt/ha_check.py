"""Run inside the Home Assistant venv (scripts/envs/homeassistant.txt), never imported by the agent's tests.

Reads ``{"discovery": <device-based discovery payload>, "messages": {topic: [payload, ...]}}`` on stdin and
prints a JSON report: each component validated with Home Assistant's own MQTT ``DISCOVERY_SCHEMA`` of its
platform, and each value template rendered by Home Assistant's template engine (``MqttValueTemplate``, as
the MQTT integration renders it) on every captured payload of its state topic, then judged as the MQTT
sensor/binary sensor would take the result: ``None`` clears a value; a numeric sensor needs a number.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from typing import Any

import homeassistant.bootstrap  # noqa: F401  (imported first: avoids a circular import inside HA 2024.1)
import voluptuous as vol
from homeassistant.components.mqtt import abbreviations, binary_sensor, sensor
from homeassistant.components.mqtt.const import PAYLOAD_NONE
from homeassistant.components.mqtt.models import MqttValueTemplate, PayloadSentinel
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import HomeAssistant

PLATFORMS = {"sensor": sensor, "binary_sensor": binary_sensor}


def _expand(payload: dict[str, Any]) -> dict[str, Any]:
    """Home Assistant's abbreviation expansion (discovery.py), with its own tables."""
    out = {abbreviations.ABBREVIATIONS.get(k, k): v for k, v in payload.items()}
    if isinstance(out.get("device"), dict):
        out["device"] = {abbreviations.DEVICE_ABBREVIATIONS.get(k, k): v for k, v in out["device"].items()}
    if isinstance(out.get("origin"), dict):
        out["origin"] = {abbreviations.ORIGIN_ABBREVIATIONS.get(k, k): v for k, v in out["origin"].items()}
    if isinstance(out.get("availability"), list):
        out["availability"] = [{abbreviations.ABBREVIATIONS.get(k, k): v for k, v in a.items()} for a in out["availability"]]
    return out


def _judge(platform: str, config: dict[str, Any], rendered: Any) -> tuple[Any, str | None]:
    """(the entity's state, a problem or None), as the MQTT platform would take ``rendered``."""
    if rendered is PayloadSentinel.DEFAULT:
        return None, "the template gave no value (the update is ignored)"
    value = str(rendered)
    if platform == "binary_sensor":
        if value in (config["payload_on"], config["payload_off"]):
            return value, None
        if value == PAYLOAD_NONE:
            return None, None
        return value, f"neither payload_on nor payload_off nor None: {value!r}"
    numeric = config.get("state_class") is not None or config.get("unit_of_measurement") is not None
    if value == PAYLOAD_NONE:
        return None, None
    if value == "":
        return None, "empty state (ignored: the sensor keeps a stale value)"
    if numeric:
        try:
            return float(value), None
        except ValueError:
            return value, f"non-numeric value {value!r} for a numeric sensor (HA raises ValueError)"
    return value, None


async def _check(doc: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        discovery = doc["discovery"]
        shared = {k: v for k, v in discovery.items() if k != "cmps"}
        report: dict[str, Any] = {"ha_version": HA_VERSION, "components": {}}
        for key, component in discovery["cmps"].items():
            entry: dict[str, Any] = {"platform": component.get("p"), "schema_error": None, "states": []}
            report["components"][key] = entry
            platform = PLATFORMS.get(component.get("p", ""))
            if platform is None:
                entry["schema_error"] = f"platform {component.get('p')!r} is not checked here"
                continue
            config = _expand({**shared, **{k: v for k, v in component.items() if k != "p"}})
            try:
                config = platform.DISCOVERY_SCHEMA(config)
            except vol.Invalid as exc:
                entry["schema_error"] = str(exc)
                continue
            template = MqttValueTemplate(config.get("value_template"), hass=hass)
            for payload in doc["messages"].get(config["state_topic"], []):
                rendered = template.async_render_with_possible_json_value(payload, PayloadSentinel.DEFAULT)
                state, problem = _judge(entry["platform"], config, rendered)
                entry["states"].append({"rendered": str(rendered), "state": state, "problem": problem})
        await hass.async_stop(force=True)
        return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_check(json.load(sys.stdin)))))
