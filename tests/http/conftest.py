"""A running agent for the HTTP tests: the demo model on the synthetic camera, with the API on a free loopback port.

Everything goes over real HTTP (httpx) to the uvicorn server inside this process, beside a
pipeline that keeps producing frames on its own thread. No ``__init__.py`` here on purpose: a
``tests/http`` package would shadow the standard library's ``http``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.backends.base import BackendOptions
from agent.config import HttpConfig
from agent.demo import demo_model_path, selftest_dir
from agent.detector import load_detector
from agent.http.server import ApiServer
from agent.pipeline import Pipeline
from agent.sinks.base import AgentContext
from agent.sources.synthetic import SyntheticConfig, SyntheticSource
from tests.waiting import free_port, wait_until

TOKEN = "test-token-0123456789abcdef"




@dataclass
class RunningAgent:
    base_url: str
    pipeline: Pipeline
    server: ApiServer
    thread: threading.Thread

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.pipeline.stopping


@contextlib.contextmanager
def start_agent(tmp: Path, source: SyntheticConfig | None = None, **http: Any) -> Iterator[RunningAgent]:
    """The demo model on a synthetic camera with the API on a free loopback port; stopped on exit."""
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    detector = load_detector(demo_model_path("tflite-int8"), BackendOptions(threads=1))
    pipeline = Pipeline(detector, SyntheticSource(source or SyntheticConfig(fps=15.0, replay=32)), [])
    config = HttpConfig(enabled=True, port=free_port(), token_file=token_file, **http)
    server = ApiServer(config, pipeline, AgentContext("test-device", tmp / "state"))
    server.start()
    thread = threading.Thread(target=pipeline.run, name="test-pipeline", daemon=True)
    thread.start()
    try:
        yield RunningAgent(f"http://127.0.0.1:{server.port}", pipeline, server, thread)
    finally:
        pipeline.request_stop()
        thread.join(timeout=10)
        server.stop()
        detector.close()


@pytest.fixture(scope="session")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    with start_agent(tmp_path_factory.mktemp("http-agent"), max_upload_bytes=2 * 2**20) as running, running.client(None) as c:
        assert wait_until(lambda: c.get("/readyz").status_code == 200, 20), c.get("/readyz").text
        yield running


@pytest.fixture
def client(agent: RunningAgent) -> Iterator[httpx.Client]:
    with agent.client() as c:
        yield c


@pytest.fixture(scope="session")
def scene_jpeg() -> bytes:
    return (selftest_dir() / "scene_00.jpg").read_bytes()


def selftest_images() -> list[Path]:
    return sorted(selftest_dir().glob("*.jpg"))
