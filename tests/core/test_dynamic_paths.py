"""Every path that loads a model goes through the one loader: a dynamic-axis ONNX serves HTTP and installs by OTA.

The model is the bundled demo detector (onnx-fp32) with its batch and spatial axes made symbolic in
the file (``["batch", 3, "height", "width"]``), so it answers meaningfully; its static original is
the twin it must agree with. ``detect`` and ``run`` are covered in test_dynamic_models.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import httpx
import pytest

from agent.backends.base import BackendOptions
from agent.config import HttpConfig
from agent.demo import demo_model_path, selftest_dir
from agent.detector import load_detector
from agent.http.server import ApiServer
from agent.manifest import Thresholds
from agent.ota.repository import Registry
from agent.pipeline import Pipeline
from agent.sinks.base import AgentContext
from agent.sources.synthetic import SyntheticConfig, SyntheticSource
from tests.waiting import free_port, wait_until

THRESHOLDS = Thresholds(score=0.3, iou=0.45, max_detections=50)


def _demo_onnx() -> tuple[Path, Path]:
    folder = demo_model_path("onnx-fp32")
    return next(p for p in folder.iterdir() if p.suffix == ".onnx"), folder / "model.json"


def dynamic_demo(folder: Path, with_manifest: bool) -> Path:
    """The demo ONNX with symbolic batch/height/width; bare, or with its manifest (no sha256) beside it."""
    import onnx

    src, manifest = _demo_onnx()
    model = onnx.load(str(src))
    for value, names in (
        (model.graph.input[0], ["batch", None, "height", "width"]),
        (model.graph.output[0], ["batch", None, "anchors"]),
    ):
        for dim, name in zip(value.type.tensor_type.shape.dim, names, strict=True):
            if name:
                dim.dim_param = name
    del model.metadata_props[:]  # no embedded manifest: only what the folder gives
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    if with_manifest:
        data = json.loads(manifest.read_text())
        data.pop("sha256", None)
        (folder / "model.json").write_text(json.dumps(data))
    return path


def test_http_detect_serves_a_dynamic_model(tmp_path: Path) -> None:
    """/v1/detect on a bare dynamic model (size from config) answers as the static original loaded bare."""
    model = dynamic_demo(tmp_path / "dyn", with_manifest=False)
    src, _ = _demo_onnx()
    bare_static = tmp_path / "static" / "model.onnx"
    bare_static.parent.mkdir()
    import onnx

    static_model = onnx.load(str(src))
    del static_model.metadata_props[:]
    onnx.save(static_model, str(bare_static))
    twin = load_detector(bare_static, BackendOptions(threads=1), thresholds=THRESHOLDS)
    size = (twin.manifest.input.width, twin.manifest.input.height)
    detector = load_detector(model, BackendOptions(threads=1), thresholds=THRESHOLDS, input_size=size)
    token = tmp_path / "token"
    token.write_text("t0123456789abcdef0123\n")
    pipeline = Pipeline(detector, SyntheticSource(SyntheticConfig(fps=15.0, replay=4)), [])
    server = ApiServer(HttpConfig(enabled=True, port=free_port(), token_file=token), pipeline, AgentContext("dev", tmp_path))
    server.start()
    thread = threading.Thread(target=pipeline.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{server.port}", headers={"Authorization": "Bearer t0123456789abcdef0123"}
        ) as c:
            assert wait_until(lambda: c.get("/readyz").status_code == 200, 20)
            image_path = sorted(selftest_dir().glob("*.jpg"))[0]
            r = c.post("/v1/detect", content=image_path.read_bytes(), headers={"Content-Type": "image/jpeg"})
            assert r.status_code == 200, r.text
            served = r.json()["detections"]
        expected = twin.detect(cv2.imread(str(image_path)))
        assert served and len(served) == len(expected)
        for got, want in zip(served, expected, strict=True):
            assert got["class_id"] == want.class_id and got["score"] == pytest.approx(want.score, abs=1e-4)
            assert [got["box"][k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx(
                [want.box.x1, want.box.y1, want.box.x2, want.box.y2], abs=0.05
            )
    finally:
        pipeline.request_stop()
        thread.join(timeout=10)
        server.stop()
        detector.close()
        twin.close()


@pytest.mark.slow
def test_ota_installs_and_serves_a_dynamic_model(tmp_path: Path) -> None:
    """A dynamic-axis ONNX published with its manifest installs by OTA: self-test, trial, commit, serving."""
    from agent.ota.httpserver import start_server
    from tests.ota.conftest import DEMO_NAME, Rig

    model = dynamic_demo(tmp_path / "dyn", with_manifest=True)
    registry = Registry.init(tmp_path / "registry")
    with start_server(registry.dir / "repository") as served:
        rig = Rig(tmp_path, url=served.url, trusted_root=registry.dir / "repository" / "metadata" / "1.root.json")
        try:
            registry.publish(model, model.parent / "model.json", name=DEMO_NAME, version="2.0.0")
            outcome = rig.check()
            assert outcome["state"] == "committed", outcome
            assert rig.serving == "2.0.0"
            backend = rig.pipeline.detector.backend
            assert backend.type_key == "onnxruntime" and backend.input.shape[0] == 1
            assert rig.pipeline.detector.sources["input.size"].startswith("manifest")
            rig.wait_results(10)
        finally:
            rig.close()
