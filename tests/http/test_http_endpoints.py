"""Every endpoint over real loopback HTTP against the running agent."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from conftest import RunningAgent, selftest_images, start_agent
from prometheus_client.parser import text_string_to_metric_families

from agent.demo import selftest_dir
from agent.pipeline import STAGES
from agent.schema import DetectionResult
from agent.telemetry import AgentStatus


def _jpeg(body: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the body is not a JPEG"
    return image


def test_healthz_and_readyz_need_no_token(agent: RunningAgent) -> None:
    with agent.client(None) as c:
        health = c.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = c.get("/readyz").json()
        assert ready["ready"] is True and ready["reasons"] == [] and ready["last_frame_age_s"] < 5


def test_status_is_the_agent_status_schema(client: httpx.Client) -> None:
    r = client.get("/v1/status")
    assert r.status_code == 200
    status = AgentStatus.model_validate(r.json())
    assert status.device_id == "test-device" and status.state == "running"
    assert status.model is not None and status.model.name.startswith("demo-shapes")
    assert status.source["connected"] is True and status.source["type"] == "synthetic"
    assert status.update.state == "not_available"


def test_metrics_parse_and_carry_the_telemetry_figures(client: httpx.Client, agent: RunningAgent) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in (
        "edge_agent_model_info",
        "edge_agent_build_info",
        "edge_agent_frames_captured",
        "edge_agent_frames_processed",
        "edge_agent_frames_dropped",
        "process_resident_memory_bytes",
        "process_cpu_seconds",
        "edge_agent_stage_latency_seconds",
        "edge_agent_http_detect_requests",
    ):
        assert name in families, f"{name} missing from /metrics"
    info = families["edge_agent_model_info"].samples[0]
    assert info.labels["model_name"] == agent.pipeline.detector.ref.name and info.value == 1
    hist = families["edge_agent_stage_latency_seconds"]
    assert hist.type == "histogram"
    stages = {s.labels["stage"] for s in hist.samples}
    assert stages == set(STAGES)
    invoke = {s.labels.get("le"): s.value for s in hist.samples if s.labels["stage"] == "invoke" and s.name.endswith("_bucket")}
    counts = [invoke[k] for k in sorted(invoke, key=lambda k: float(k))]
    assert counts == sorted(counts) and counts[-1] > 0, "buckets are cumulative and the invoke stage has samples"
    processed = families["edge_agent_frames_processed"].samples[0].value
    assert processed > 0 and families["edge_agent_frames_processed"].type == "counter"


def test_detect_raw_jpeg_finds_the_ground_truth_shapes(client: httpx.Client) -> None:
    labels = json.loads((selftest_dir() / "labels.json").read_text())
    names = {c["id"]: c["name"] for c in labels["categories"]}
    image = labels["images"][0]
    expected = sorted(names[a["category_id"]] for a in labels["annotations"] if a["image_id"] == image["id"])
    body = (selftest_dir() / image["file_name"]).read_bytes()
    r = client.post("/v1/detect", content=body, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    result = DetectionResult.model_validate(r.json())
    assert (result.frame_width, result.frame_height) == (image["width"], image["height"])
    assert result.source_id == "http-upload"
    assert sorted(d.label for d in result.detections) == expected


def test_detect_multipart_png_and_annotated(client: httpx.Client) -> None:
    bgr = cv2.imread(str(selftest_images()[1]))
    png = cv2.imencode(".png", bgr)[1].tobytes()
    r = client.post("/v1/detect", files={"image": ("scene.png", png, "image/png")})
    assert r.status_code == 200, r.text
    n = len(DetectionResult.model_validate(r.json()).detections)
    assert n > 0
    r = client.post("/v1/detect?annotated=1", files={"image": ("scene.png", png, "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert int(r.headers["x-detections"]) == n
    drawn = _jpeg(r.content)
    assert drawn.shape == bgr.shape and not np.array_equal(drawn, bgr)


def test_snapshot_is_a_fresh_annotated_camera_frame(client: httpx.Client, agent: RunningAgent) -> None:
    before = agent.pipeline.stats.frames
    r = client.get("/v1/snapshot")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert int(r.headers["x-frame-id"]) >= before
    assert _jpeg(r.content).shape == (480, 640, 3)


def test_docs_and_openapi_are_public_by_default(agent: RunningAgent, client: httpx.Client) -> None:
    # the startup log says "docs at /docs": a browser has no bearer token, and the docs hold no device data
    with agent.client(None) as anon:
        assert anon.get("/docs").status_code == 200
        assert anon.get("/openapi.json").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/healthz", "/readyz", "/metrics", "/v1/status", "/v1/detect", "/v1/snapshot"} <= set(spec["paths"])
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # the page works on an offline site network: no script, nothing loaded from elsewhere
    assert "<script" not in page.text and "http://" not in page.text and "https://" not in page.text
    for path in spec["paths"]:
        assert f">{path}<" in page.text, path
    for schema in spec["components"]["schemas"]:
        assert f'id="schema-{schema}"' in page.text, schema
    assert "annotated" in page.text  # the detect endpoint's query parameter
    assert set(spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]) == {
        "image/jpeg",
        "image/png",
        "multipart/form-data",
    }


def test_detect_does_not_share_state_with_the_pipeline(client: httpx.Client, agent: RunningAgent) -> None:
    """A different upload size must not re-shape the pipeline's preprocessor (it has its own lane)."""
    pre = agent.pipeline.detector.preprocessor
    key = pre._key
    big = cv2.resize(cv2.imread(str(selftest_images()[2])), (1280, 960))
    r = client.post("/v1/detect", content=cv2.imencode(".jpg", big)[1].tobytes(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["frame_width"] == 1280
    assert pre._key == key


def test_private_docs_need_the_token_and_the_log_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.http")
    with start_agent(tmp_path, public_docs=False) as running:
        with running.client(None) as anon:
            assert anon.get("/docs").status_code == 401 and anon.get("/openapi.json").status_code == 401
        with running.client() as c:
            assert c.get("/docs").status_code == 200
    assert "docs at /docs: needs the bearer token (http.public_docs: true opens it)" in caplog.text
