"""Synthetic camera -> pipeline -> mqtt sink -> real broker -> subscriber, checked against the published schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from agent.schema import DetectionResult
from agent.sinks.mqtt.payloads import payload_schemas
from agent.telemetry import TelemetrySnapshot

from .conftest import REPO, Broker, RunningPipeline, Subscriber, make_sink, wait_until


def _validator(topic: str) -> jsonschema.protocols.Validator:
    schema = payload_schemas()[topic]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_detections_arrive_and_validate_against_the_published_schema(broker: Broker, tmp_path: Path, subscribers: list) -> None:
    sub = Subscriber(broker.port, ("edge/e2e/#",))
    subscribers.append(sub)
    sink = make_sink(tmp_path / "state", broker.port, "e2e", telemetry_interval_s=0.3)
    run = RunningPipeline([sink], fps=30, frames=45)
    run.wait()  # the source ends after 45 frames; shutdown flushes the sink
    results = run.results
    n = len(results)
    assert n >= 30 and wait_until(lambda: len(sub.of("detections")) >= n, 10)

    detections = _validator("detections")
    docs = [m.json() for m in sub.of("detections")]
    for doc in docs:
        detections.validate(doc)
        DetectionResult.model_validate(doc["result"])  # the one result schema, untouched
    assert [d["result"]["frame_id"] for d in docs] == sorted(d["result"]["frame_id"] for d in docs)
    assert len({d["msg_id"] for d in docs}) == len(docs) == n
    assert [d["result"]["frame_id"] for d in docs] == [r.frame_id for r in results]
    assert sum(len(d["result"]["detections"]) for d in docs) > n  # the demo model finds the shapes

    telemetry = _validator("telemetry")
    tel = [m.json() for m in sub.of("telemetry")]
    assert tel, "telemetry every 0.3 s"
    for doc in tel:
        telemetry.validate(doc)
    last = TelemetrySnapshot.model_validate(tel[-1]["telemetry"])
    assert last.transport is not None and last.model is not None and last.fps.inference is not None
    assert last.latency_ms["invoke"].count > 0

    status = _validator("status")
    statuses = [m.json() for m in sub.of("status")]
    for doc in statuses:
        status.validate(doc)
    assert statuses[0]["state"] == "running" and statuses[-1]["state"] == "stopped"
    assert statuses[0]["update"]["state"] == "not_available"
    counts = _validator("counts")
    for m in sub.of("counts"):
        counts.validate(m.json())
    availability = [m.payload for m in sub.of("availability")]
    assert availability[0] == b"online" and availability[-1] == b"offline"  # clean shutdown says offline


def test_schema_command_prints_the_payload_schemas() -> None:
    proc = subprocess.run([sys.executable, "-m", "agent", "mqtt", "schema"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(json.dumps(payload_schemas()))
    one = subprocess.run(
        [sys.executable, "-m", "agent", "mqtt", "schema", "--topic", "detections"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(one.stdout)["title"] == "DetectionMessage"


@pytest.mark.parametrize(
    ("policy", "expect"),
    [("every_frame", lambda n, with_dets, changes: n), ("with_detections", lambda n, w, c: w), ("on_change", lambda n, w, c: c)],
)
def test_publish_policies(policy: str, expect, broker: Broker, tmp_path: Path, subscribers: list) -> None:
    sub = Subscriber(broker.port, ("edge/pol/detections",))
    subscribers.append(sub)
    sink = make_sink(tmp_path / "state", broker.port, "pol", publish=policy, telemetry_interval_s=0)
    run = RunningPipeline([sink], fps=60, frames=40, seed=11)
    run.wait()
    results = run.results
    keys = [tuple(sorted(d.label for d in r.detections)) for r in results]
    with_dets = sum(1 for k in keys if k)
    changes = sum(1 for i, k in enumerate(keys) if i == 0 or k != keys[i - 1])
    want = expect(len(results), with_dets, changes)
    assert wait_until(lambda: len(sub.of("detections")) >= want, 10)
    assert len(sub.of("detections")) == want


def test_status_file_and_status_command(broker: Broker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    sink = make_sink(state, broker.port, "st", status_file_interval_s=0.2)
    run = RunningPipeline([sink], fps=30)
    try:
        assert wait_until(
            lambda: (state / "status.json").exists() and json.loads((state / "status.json").read_text())["telemetry"], 10
        )
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--state-dir", str(state), "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["alive"] and doc["status"]["state"] == "running" and doc["mqtt"]["connected"]
        assert doc["telemetry"]["transport"]["outbox_rows"] >= 0
        pretty = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--state-dir", str(state)], cwd=REPO, capture_output=True, text=True
        )
        assert pretty.returncode == 0 and "running" in pretty.stdout and "demo-shapes" in pretty.stdout
    finally:
        run.stop()
    after = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--state-dir", str(state), "--json"], cwd=REPO, capture_output=True, text=True
    )
    assert after.returncode == 1 and json.loads(after.stdout)["status"]["state"] == "stopped"


def test_tail_prints_a_devices_messages(broker: Broker, tmp_path: Path) -> None:
    sink = make_sink(tmp_path / "state", broker.port, "tl")
    run = RunningPipeline([sink], fps=30)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "tail",
                "--port",
                str(broker.port),
                "--device",
                "tl",
                "--count",
                "20",
                "--duration",
                "20",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        run.stop()
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if " detections " in line]
    assert lines and "frame" in lines[0] and "invoke" in lines[0], proc.stdout
    assert "status running" in proc.stdout
