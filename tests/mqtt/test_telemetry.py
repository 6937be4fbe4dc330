"""Telemetry: machine readers on a fake /sys and /proc, windowed percentiles, Home Assistant discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import sysinfo
from agent.pipeline import PipelineStats
from agent.schema import ModelRef
from agent.sinks.mqtt.config import MqttSinkConfig
from agent.sinks.mqtt.discovery import discovery_payload, discovery_topic
from agent.sinks.mqtt.topics import Topics
from agent.sources.synthetic import SyntheticConfig, SyntheticSource
from agent.stats import LatencyHistogram, window_summary
from agent.telemetry import TelemetryCollector, TransportTelemetry

from .conftest import Broker, RunningPipeline, Subscriber, make_sink, wait_until


def fake_pi(root: Path, temp_milli: int = 61_234, throttled: str = "0x50005") -> Path:
    zone = root / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text(f"{temp_milli}\n")
    fw = root / "devices" / "platform" / "soc" / "soc:firmware"
    fw.mkdir(parents=True)
    (fw / "get_throttled").write_text(f"{throttled}\n")
    return root


def test_soc_temperature_and_throttling_from_sysfs(tmp_path: Path) -> None:
    root = fake_pi(tmp_path / "sys")
    assert sysinfo.soc_temperature_c(root) == pytest.approx(61.234)
    flags = sysinfo.throttled_flags(sysinfo.find_throttled_node(root))
    assert flags is not None and flags["raw"] == 0x50005
    assert flags["under_voltage"] and flags["throttled"] and not flags["freq_capped"]
    assert flags["under_voltage_occurred"] and flags["throttled_occurred"] and not flags["soft_temp_limit_occurred"]


def test_off_pi_values_are_none_not_zero(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert sysinfo.soc_temperature_c(empty) is None
    assert sysinfo.throttled_flags(sysinfo.find_throttled_node(empty)) is None
    other = tmp_path / "acpi"
    (other / "class" / "thermal" / "thermal_zone0").mkdir(parents=True)
    (other / "class" / "thermal" / "thermal_zone0" / "type").write_text("acpitz\n")
    (other / "class" / "thermal" / "thermal_zone0" / "temp").write_text("27800\n")
    assert sysinfo.soc_temperature_c(other) is None, "a motherboard zone is not the SoC"
    assert sysinfo.rss_bytes(empty) is None and sysinfo.mem_available_bytes(empty) is None


def test_real_proc_readers() -> None:
    rss = sysinfo.rss_bytes()
    assert rss is not None and rss > 10 * 2**20
    before = sysinfo.cpu_times()
    sum(i * i for i in range(300_000))
    process, system = sysinfo.cpu_percent(before, sysinfo.cpu_times())
    assert process is not None and process > 0 and system is not None and 0 <= system <= 100
    assert sysinfo.free_disk_bytes(Path("/definitely/not/here")) is not None, "falls back to the nearest existing parent"


def test_window_percentiles_cover_only_the_window() -> None:
    h = LatencyHistogram()
    for _ in range(1000):
        h.record(100.0)
    before = h.bucket_counts()
    for _ in range(100):
        h.record(1.0)
    w = window_summary(before, h.bucket_counts())
    assert w["count"] == 100 and w["p99"] == pytest.approx(1.0, rel=0.03), "the old 100 ms samples are outside the window"
    assert h.percentile(50) == pytest.approx(100.0, rel=0.03), "the cumulative view is untouched"


def test_collector_snapshot(tmp_path: Path) -> None:
    source = SyntheticSource(SyntheticConfig())
    stats = PipelineStats(source)
    acked = LatencyHistogram()
    transport = TransportTelemetry(
        connected=True,
        reconnects=2,
        outbox_rows=5,
        outbox_bytes=500,
        published=10,
        acknowledged=10,
        acknowledged_detections=0,
        dropped={"telemetry": 1},
    )
    collector = TelemetryCollector(
        stats,
        lambda: ModelRef(name="m", version="2"),
        tmp_path,
        lambda: (transport, acked),
        sys_root=fake_pi(tmp_path / "sys", temp_milli=70_000),
    )
    for ms in (1.0, 2.0, 3.0):
        stats.latency["invoke"].record(ms)
        acked.record(ms * 10)
    source.stats.frames_captured, stats.frames, source.stats.frames_dropped = 30, 28, 2
    transport = transport.model_copy(update={"acknowledged_detections": 28})
    snap = collector.collect()
    assert snap.model is not None and snap.model.version == "2"
    assert snap.frames.processed == 28 and snap.frames.dropped == 2 and snap.frames.dropped_window == 2
    assert snap.fps.source is not None and snap.fps.source > 0 and snap.fps.published is not None and snap.fps.published > 0
    assert snap.latency_ms["invoke"].count == 3 and snap.latency_ms["invoke"].p50 == pytest.approx(2.0, rel=0.03)
    assert snap.transport is not None and snap.transport.capture_to_ack_ms.p99 == pytest.approx(30.0, rel=0.03)
    assert snap.soc.temperature_c == 70.0 and snap.soc.throttled is not None
    assert snap.disk.state_dir_free_bytes and snap.memory.rss_bytes and snap.cpu.cores >= 1
    again = collector.collect()
    assert again.latency_ms["invoke"].count == 0 and again.latency_ms["invoke"].p50 is None, "a new window"
    json.loads(again.model_dump_json())


# ---- Home Assistant ------------------------------------------------------------------------------
def _check_ha_discovery(doc: dict, topics: Topics, labels: list[str]) -> None:
    """The keys Home Assistant documents as required for device-based discovery."""
    dev = doc["dev"]
    assert dev["ids"] and isinstance(dev["ids"], list) and dev["name"]
    assert doc["o"]["name"], "origin (o) with a name is required for device discovery"
    assert doc["availability"][0]["topic"] == topics.availability
    assert {c["p"] for c in doc["cmps"].values()} == {"sensor", "binary_sensor"}
    for key, cmp in doc["cmps"].items():
        assert cmp["unique_id"] == key and cmp["state_topic"] and cmp["name"]
        assert all(c.isalnum() or c in "_-" for c in key), "ids are limited to [a-zA-Z0-9_-]"
    binaries = [c for c in doc["cmps"].values() if c["p"] == "binary_sensor"]
    assert len(binaries) == len(labels) and all(c["state_topic"] == topics.counts for c in binaries)
    names = {c["name"] for c in doc["cmps"].values()}
    assert {"Inference FPS", "Inference latency p50", "SoC temperature"} <= names


def test_discovery_payload_has_the_required_keys() -> None:
    topics = Topics.for_device("pi-kitchen")
    doc = discovery_payload("pi-kitchen", topics, ["person", "fire truck"], ModelRef(name="ssd", version="3"))
    _check_ha_discovery(doc, topics, ["person", "fire truck"])
    assert discovery_topic("homeassistant", "pi-kitchen") == "homeassistant/device/pi-kitchen/config"
    assert MqttSinkConfig().home_assistant.discovery_prefix == "homeassistant"


def test_discovery_is_announced_and_reannounced_on_ha_birth(broker: Broker, tmp_path: Path, subscribers: list) -> None:
    ha = Subscriber(broker.port, ("homeassistant/device/#", "edge/ha1/counts"))
    subscribers.append(ha)
    sink = make_sink(tmp_path / "state", broker.port, "ha1", home_assistant={"enabled": True, "labels": ["circle", "square"]})
    run = RunningPipeline([sink], fps=30)
    try:
        assert wait_until(lambda: len(ha.of("config")) == 1, 10)
        _check_ha_discovery(ha.of("config")[0].json(), Topics.for_device("ha1"), ["circle", "square"])
        ha.client.publish("homeassistant/status", "online", qos=1)  # Home Assistant restarted
        assert wait_until(lambda: len(ha.of("config")) == 2, 10)
        # the label entities' state: counts of the latest frame (which shapes it shows depends on the frame)
        assert wait_until(lambda: any("circle" in m.json()["counts"] for m in ha.of("counts")), 10), ha.of("counts")[-3:]
    finally:
        run.stop()
