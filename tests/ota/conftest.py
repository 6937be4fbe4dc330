"""OTA fixtures: a real registry made by edge-registry, served by a real HTTP server with Range support,
and a running pipeline (synthetic camera, bundled demo model) with a ModelUpdater attached."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent.backends.base import BackendOptions
from agent.config import UpdateConfig
from agent.demo import demo_model_path
from agent.detector import Detector, load_detector
from agent.ota.httpserver import RangeRequestHandler, RunningServer, start_server
from agent.ota.repository import Registry
from agent.ota.updater import ModelUpdater
from agent.pipeline import Pipeline
from agent.schema import DetectionResult
from agent.sinks.base import Sink, SinkConfigBase
from agent.sources import build_source
from agent.sources.synthetic import SyntheticConfig
from agent.telemetry import UpdateState

DEMO = "tflite-int8"
DEMO_NAME = "demo-shapes-tflite-int8"  # the bundled model's manifest name: the model a factory agent follows


def demo_files(variant: str = DEMO) -> tuple[Path, Path]:
    d = demo_model_path(variant)
    manifest = d / "model.json"
    return d / json.loads(manifest.read_text())["file"], manifest


def open_model(path: Path) -> Detector:
    return load_detector(path, BackendOptions(threads=1))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry.init(tmp_path / "registry")


@pytest.fixture
def served(registry: Registry) -> Iterator[RunningServer]:
    with start_server(registry.dir / "repository") as server:
        yield server


class Recorder(Sink):
    """A sink that keeps what it is given (results with their arrival time, events, update states)."""

    type_key: ClassVar[str] = "recorder"
    config_model: ClassVar[type[SinkConfigBase]] = SinkConfigBase

    def __init__(self) -> None:
        super().__init__(SinkConfigBase())
        self.results: list[tuple[float, DetectionResult]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.states: list[UpdateState] = []
        self.checker: Callable[[], Any] | None = None

    def emit(self, result: DetectionResult) -> None:
        self.results.append((time.monotonic(), result))

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    # the hooks the MQTT sink offers the updater
    def set_update_state(self, state: UpdateState) -> None:
        self.states.append(state)

    def set_update_checker(self, checker: Callable[[], Any]) -> None:
        self.checker = checker

    def subscribe(self, topic: str, callback: Callable[[str, bytes], None]) -> None:
        pass

    def phases(self) -> list[str]:
        return [d["phase"] for k, d in self.events if k == "update"]

    def versions_served(self) -> list[str]:
        out: list[str] = []
        for _, r in self.results:
            if not out or out[-1] != r.model.version:
                out.append(r.model.version)
        return out

    def max_gap_ms(self, since: float) -> float:
        ts = [t for t, _ in self.results if t >= since]
        return max(((b - a) * 1000 for a, b in itertools.pairwise(ts)), default=0.0)


@dataclass
class Rig:
    """A running agent in this process: synthetic camera -> pipeline -> recorder, with the updater attached."""

    tmp: Path
    url: str
    trusted_root: Path
    fps: float = 30.0
    update: dict[str, Any] = field(default_factory=dict)
    device_id: str = "dev-1"
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        cfg = dict(
            enabled=True,
            url=self.url,
            trusted_root=self.trusted_root,
            check_on_start=False,
            fleet_topic=None,
            notify_jitter_s=0,
            trial_frames=15,
            trial_s=0.3,
            download_retries=2,
            download_timeout_s=5,
        )
        cfg.update(self.update)
        self.config = UpdateConfig(**cfg)
        self.state_dir = self.state_dir or self.tmp / "state"
        self.updater = ModelUpdater(self.config, state_dir=self.state_dir, device_id=self.device_id, open_model=open_model)
        path = self.updater.startup_model(demo_model_path(DEMO))
        self.recorder = Recorder()
        source = build_source(SyntheticConfig(fps=self.fps, seed=1))
        self.pipeline = Pipeline(open_model(path), source, [self.recorder])
        self.updater.attach(self.pipeline)
        self._thread = threading.Thread(target=self.pipeline.run, name="rig-pipeline", daemon=True)
        self._thread.start()
        self.wait_results(20)

    def wait_results(self, n: int, timeout: float = 20.0) -> None:
        start = len(self.recorder.results)
        deadline = time.monotonic() + timeout
        while len(self.recorder.results) < start + n:
            assert time.monotonic() < deadline, f"the pipeline produced {len(self.recorder.results) - start} of {n} results"
            time.sleep(0.02)

    def check(self) -> dict[str, Any]:
        return self.updater.check_and_apply()

    @property
    def serving(self) -> str:
        return self.pipeline.detector.ref.version

    def close(self) -> None:
        self.updater.stop()
        self.pipeline.request_stop()
        self._thread.join(15)
        self.pipeline.detector.close()


@pytest.fixture
def make_rig(tmp_path: Path, registry: Registry, served: RunningServer) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**kw: Any) -> Rig:
        kw.setdefault("url", served.url)
        rig = Rig(tmp_path, trusted_root=registry.dir / "repository" / "metadata" / "1.root.json", **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


__all__ = ["DEMO", "DEMO_NAME", "RangeRequestHandler", "Recorder", "Rig", "demo_files", "open_model"]
