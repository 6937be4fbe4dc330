"""The HTTP API inside the agent process: uvicorn on a background thread, beside the pipeline.

:class:`ApiServer` is what ``edge-agent run`` starts (when ``http.enabled``) before the
pipeline and stops after it. :class:`ApiState` is everything the routes read: the live
pipeline, the detect lane, the token, readiness, metrics and status.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.errors import ConfigError
from agent.http.images import decode_upload, encode_jpeg
from agent.http.inference import DetectLane
from agent.http.models import Readiness
from agent.schema import DetectionResult

if TYPE_CHECKING:
    from agent.config import HttpConfig
    from agent.pipeline import Pipeline
    from agent.sinks.base import AgentContext
    from agent.telemetry import AgentStatus

log = logging.getLogger(__name__)


def read_token(path: Path) -> str:
    """The bearer token: the file's first line, stripped; a missing, unreadable or empty file is a ConfigError."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"http.token_file: cannot read {path}: {exc.strerror}", [("http.token_file", str(exc.strerror))]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"http.token_file: {path} is not UTF-8 text; write the token as text (e.g. `openssl rand -hex 32 > token`)",
            [("http.token_file", "not UTF-8 text")],
        ) from None
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise ConfigError(
            f"http.token_file: {path} must hold a token of at least 16 characters on its first line "
            "(e.g. `openssl rand -hex 32 > token`)",
            [("http.token_file", "token missing or shorter than 16 characters")],
        )
    return token


class ApiState:
    """The live agent as the routes see it (any thread)."""

    def __init__(self, config: HttpConfig, pipeline: Pipeline, context: AgentContext, token: str) -> None:
        from agent.sinks.base import config_hash
        from agent.telemetry import TelemetryCollector

        self.config = config
        self.pipeline = pipeline
        self.context = context
        self.token = token
        self.started_monotonic = time.monotonic()
        self.started_at = time.time()
        self.config_hash = config_hash(context.config) if context.config is not None else None
        self.lane = DetectLane(pipeline)
        self.detect_slots = threading.BoundedSemaphore(config.max_pending_detects)
        self.errors = 0
        self._counts = {"ok": 0, "refused": 0, "busy": 0}
        self._last_frame: float | None = None
        pipeline.frame_hooks.append(self._on_frame)
        self._mqtt: Any = next((s for s in pipeline.sinks if s.type_key == "mqtt"), None)
        self._telemetry = TelemetryCollector(pipeline.stats, lambda: pipeline.detector.ref, context.state_dir, self._transport)
        self._registry: Any = None

    # ---- frame hook (pipeline thread): one float store per frame ---------------------------------
    def _on_frame(self, _: DetectionResult) -> None:
        self._last_frame = time.monotonic()

    def count(self, outcome: str) -> None:
        self._counts[outcome] = self._counts.get(outcome, 0) + 1

    def counts(self) -> dict[str, int]:
        return {**self._counts, "error": self.errors}

    # ---- health ----------------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        p = self.pipeline
        reasons = []
        if p.stopping:
            reasons.append("the agent is stopping")
        if p.detector is None:
            reasons.append("no model loaded")
        if not p.source.stats.connected:
            reasons.append(f"source {p.source.config.id!r} is not delivering frames (not connected)")
        age = None if self._last_frame is None else time.monotonic() - self._last_frame
        if age is None:
            reasons.append("no frame processed yet")
        elif age > self.config.ready_max_frame_age_s:
            reasons.append(
                f"the last frame was processed {age:.1f} s ago (http.ready_max_frame_age_s = {self.config.ready_max_frame_age_s})"
            )
        return Readiness(ready=not reasons, reasons=reasons, last_frame_age_s=age)

    # ---- telemetry -------------------------------------------------------------------------------
    def _transport(self) -> Any:
        mqtt = self._mqtt
        if mqtt is None or getattr(mqtt, "forwarder", None) is None:
            return None, None  # TelemetryCollector then reports transport=None
        return mqtt.transport_telemetry()

    def render_metrics(self) -> bytes:
        from prometheus_client import CollectorRegistry

        from agent.http.metrics import AgentMetrics, register_standard_collectors, render

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(AgentMetrics(self.pipeline, self._telemetry, self.counts))
            register_standard_collectors(self._registry)  # process_* and python_info
        return render(self._registry)

    def status(self) -> AgentStatus:
        """The MQTT sink's retained status when it runs (same values, same model), else the same AgentStatus built here."""
        from agent.telemetry import AgentStatus, UpdateState

        mqtt = self._mqtt
        if mqtt is not None and getattr(mqtt, "topics", None) is not None:
            status: AgentStatus = mqtt.status()
            return status
        p = self.pipeline
        return AgentStatus(
            device_id=self.context.device_id,
            state="stopping" if p.stopping else "running",
            started_at=self.started_at,
            uptime_s=time.time() - self.started_at,
            model=p.detector.ref,
            thresholds=p.detector.decoder.thresholds.model_dump(),
            source={"id": p.source.config.id, "type": p.source.type_key, "connected": p.source.stats.connected},
            config_hash=self.config_hash,
            update=UpdateState(),
        )

    # ---- blocking work (thread pool) -----------------------------------------------------------
    def run_detect(self, data: bytes, declared: str | None, annotated: bool) -> tuple[DetectionResult, bytes | None]:
        image = decode_upload(data, declared, self.config.max_pixels, self.config.max_side, self.config.max_decode_s)
        result = self.lane.detect(image)
        if not annotated:
            return result, None
        return result, encode_jpeg(draw_detections_on(image, result), self.config.jpeg_quality)

    def snapshot_jpeg(self) -> tuple[bytes, DetectionResult] | None:
        got: list[tuple[np.ndarray, DetectionResult]] = []
        done = threading.Event()

        def take(image: np.ndarray, result: DetectionResult) -> None:  # pipeline thread: keep it to a store
            got.append((image, result))
            done.set()

        self.pipeline.request_snapshot(take)
        if not done.wait(self.config.snapshot_timeout_s):
            return None
        image, result = got[0]
        return encode_jpeg(draw_detections_on(image, result), self.config.jpeg_quality), result

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.pipeline.frame_hooks.remove(self._on_frame)
        self.lane.close()


def draw_detections_on(image: np.ndarray, result: DetectionResult) -> np.ndarray:
    from agent.annotate import draw_detections

    return draw_detections(image, result.detections)


class ApiServer:
    """uvicorn serving :func:`~agent.http.app.build_app` on a daemon thread; ``start`` returns once it listens."""

    def __init__(self, config: HttpConfig, pipeline: Pipeline, context: AgentContext) -> None:
        import uvicorn

        from agent.http.app import build_app

        assert config.token_file is not None  # HttpConfig requires it when enabled
        self.config = config
        self.state = ApiState(config, pipeline, context, read_token(config.token_file))
        self.app = build_app(self.state)
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=config.host,
                port=config.port,
                log_config=None,  # keep the agent's logging setup
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
                server_header=False,
            )
        )
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``port: 0`` in tests)."""
        for server in getattr(self._server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.config.port

    def start(self, timeout_s: float = 10.0) -> None:
        def serve() -> None:
            try:
                self._server.run()
            except BaseException as exc:  # noqa: BLE001 - uvicorn exits with SystemExit on bind errors; reported by start()
                self._failure = exc

        self._thread = threading.Thread(target=serve, name="http-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise ConfigError(
                f"http: cannot listen on {self.config.host}:{self.config.port} (in use, or not an address of this machine; "
                "see the log above)",
                [("http.port", "cannot bind")],
            )
        docs = "public" if self.config.public_docs else "needs the bearer token (http.public_docs: true opens it)"
        log.info("HTTP API on http://%s:%d (docs at /docs: %s)", self.config.host, self.port, docs)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.state.close()


def start_api(config: HttpConfig, pipeline: Pipeline, context: AgentContext) -> ApiServer | None:
    """Start the API when ``http.enabled`` (before ``pipeline.run``); None when it is off."""
    if not config.enabled:
        return None
    server = ApiServer(config, pipeline, context)
    server.start()
    return server
