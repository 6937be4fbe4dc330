"""``/metrics`` with the MQTT sink running: ``promtool check metrics`` (Prometheus' own linter) passes, rates are
counters (two scrapers see the same figures), the standard ``process_*`` series are there, and the model and build
are each one ``*_info`` series."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.backends.base import BackendOptions
from agent.config import HttpConfig
from agent.demo import demo_model_path
from agent.detector import load_detector
from agent.http.server import ApiServer
from agent.pipeline import Pipeline
from agent.sinks.base import AgentContext
from agent.sources.synthetic import SyntheticConfig, SyntheticSource
from tests.waiting import free_port

from .conftest import Broker, make_sink, wait_until

PROMTOOL = shutil.which("promtool")
TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def api(broker: Broker, tmp_path: Path) -> Iterator[tuple[httpx.Client, Pipeline]]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    sink = make_sink(tmp_path / "state", broker.port, "metrics", telemetry_interval_s=1)
    detector = load_detector(demo_model_path("tflite-int8"), BackendOptions(threads=1))
    pipeline = Pipeline(detector, SyntheticSource(SyntheticConfig(fps=20.0)), [sink])
    server = ApiServer(HttpConfig(enabled=True, port=free_port(), token_file=token), pipeline, AgentContext("metrics", tmp_path))
    server.start()
    thread = threading.Thread(target=pipeline.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            assert wait_until(lambda: c.get("/readyz").status_code == 200 and sink.forwarder and sink.forwarder.acked > 5, 30)
            yield c, pipeline
    finally:
        pipeline.request_stop()
        thread.join(10)
        server.stop()
        detector.close()


@pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (apt-get install prometheus; scripts/test.sh does)")
def test_promtool_accepts_the_exposition(api: tuple[httpx.Client, Pipeline]) -> None:
    client, _ = api
    text = client.get("/metrics").text
    proc = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, text=True, capture_output=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_counters_info_series_and_process_collectors(api: tuple[httpx.Client, Pipeline]) -> None:
    client, pipeline = api
    first = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    other = client.get("/metrics")  # a second scraper in between must not change what the first one sees
    assert other.status_code == 200
    time.sleep(1.0)
    second = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    windowed = ("edge_agent_inference_fps", "edge_agent_source_fps", "edge_agent_published_fps", "edge_agent_process_cpu_percent")
    for gone in windowed:
        assert gone not in second, f"{gone}: a since-the-last-scrape gauge; use rate() of the counter"
    for name in (
        "edge_agent_frames_processed",
        "edge_agent_frames_captured",
        "edge_agent_system_cpu_seconds",
        "edge_agent_mqtt_acknowledged_detections",
        "edge_agent_mqtt_published_unpersisted",
        "edge_agent_outbox_write_failures",
        "process_cpu_seconds",
    ):
        assert second[name].type == "counter", name
        assert second[name].samples[0].value >= first[name].samples[0].value, f"{name} never goes down"
    frames = [f["edge_agent_frames_processed"].samples[0].value for f in (first, second)]
    assert frames[1] > frames[0], "frames keep counting between scrapes, whoever else scraped"
    assert {"process_resident_memory_bytes", "process_start_time_seconds", "process_open_fds", "python_info"} <= set(second)

    model = second["edge_agent_model_info"].samples
    assert len(model) == 1 and model[0].value == 1
    ref = pipeline.detector.ref
    assert model[0].labels == {"model_name": ref.name, "model_version": ref.version, "model_sha256": ref.sha256 or ""}
    build = second["edge_agent_build_info"].samples
    assert len(build) == 1 and build[0].value == 1 and build[0].labels["version"]
    sha_labelled = [f.name for f in second.values() for s in f.samples if "model_sha256" in s.labels]
    assert sha_labelled == ["edge_agent_model_info"], "the sha256 lives on the one info series only"
    hist = second["edge_agent_stage_latency_seconds"].samples
    assert {tuple(sorted(s.labels)) for s in hist if s.name.endswith("_bucket")} == {
        ("le", "model_name", "model_version", "stage")
    }
