"""Home Assistant discovery, checked by Home Assistant's own code (its MQTT discovery schemas and template engine).

The agent runs against a real broker with ``home_assistant.enabled``; the discovery message and the telemetry
and counts payloads it really publishes are captured and fed to ``ha_check.py`` in the test-only Home Assistant
venv (scripts/envs/homeassistant.txt). A missing value (no SoC sensor off a Pi, a telemetry window without
inferences) must render ``None``, which HA takes as "no value", never a string a numeric sensor rejects.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conformance.refs import ref_python

from .conftest import Broker, RunningPipeline, Subscriber, make_sink, wait_until

HA_CHECK = Path(__file__).with_name("ha_check.py")


def test_discovery_validates_and_templates_render_in_home_assistant(broker: Broker, tmp_path: Path, subscribers: list) -> None:
    python = ref_python("homeassistant")
    sub = Subscriber(broker.port, ("homeassistant/#", "edge/ha/#"))
    subscribers.append(sub)
    # 2 fps with 4 telemetry messages a second: some windows hold no inference (latency p50 is None)
    sink = make_sink(tmp_path / "state", broker.port, "ha", telemetry_interval_s=0.25, home_assistant={"enabled": True})
    run = RunningPipeline([sink], fps=2)
    try:
        assert wait_until(lambda: sub.of("homeassistant/device/ha/config") and len(sub.of("telemetry")) >= 12, 30)
        assert wait_until(lambda: len(sub.of("counts")) >= 2, 20)
    finally:
        run.stop()
    discovery = sub.of("homeassistant/device/ha/config")[0].json()
    messages: dict[str, list[str]] = {}
    for m in sub.messages:
        messages.setdefault(m.topic, []).append(m.payload.decode())
    missing_latency = [
        t for t in messages["edge/ha/telemetry"] if json.loads(t)["telemetry"]["latency_ms"]["invoke"]["p50"] is None
    ]
    assert missing_latency, "the capture holds a telemetry window without inferences"

    proc = subprocess.run(
        [python, str(HA_CHECK)], input=json.dumps({"discovery": discovery, "messages": messages}), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    components = report["components"]
    assert set(components) == set(discovery["cmps"]) and len(components) >= 4
    for key, entry in components.items():
        assert entry["schema_error"] is None, f"{key}: Home Assistant {report['ha_version']} rejects it: {entry['schema_error']}"
        assert entry["states"], f"{key}: no payload on its state topic was captured"
        problems = [s for s in entry["states"] if s["problem"]]
        assert not problems, f"{key}: {problems[:3]}"
    latency = components["ha_inference_ms"]["states"]
    assert any(s["state"] is None for s in latency) and any(isinstance(s["state"], float) for s in latency)
    soc = components["ha_soc_temperature"]["states"]
    if all(json.loads(t)["telemetry"]["soc"]["temperature_c"] is None for t in messages["edge/ha/telemetry"]):
        assert all(s["state"] is None for s in soc), "off a Pi there is no SoC temperature: None, not 'unknown'"
    detected = {s["state"] for key, e in components.items() if key.endswith("_detected") for s in e["states"]}
    assert detected == {"ON", "OFF"}, detected
