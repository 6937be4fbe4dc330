"""The ``mqtt`` sink: wires the connection, the outbox forwarder, telemetry, commands and discovery.

Threads (the pipeline thread only ever appends to a deque):

- ``mqtt-outbox``: the one SQLite writer; commits, publishes in order, deletes on PUBACK;
- paho's network thread: socket, reconnects, callbacks (which only queue work);
- ``mqtt-commands``: runs commands, snapshot encoding, status and discovery publishing;
- ``mqtt-ticker`` (``reporting.py``): telemetry, ``status.json`` and the retained status.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from paho.mqtt.client import topic_matches_sub

from agent.errors import AgentError, ConfigError
from agent.schema import DetectionResult
from agent.sinks.base import AgentContext, Sink, SinkConfigBase, config_hash
from agent.sinks.mqtt.config import MqttSinkConfig
from agent.sinks.mqtt.outbox import Kind
from agent.sinks.mqtt.payloads import CountsMessage
from agent.sinks.mqtt.reporting import Reporter
from agent.telemetry import UpdateState

if TYPE_CHECKING:
    from agent.pipeline import Pipeline
    from agent.sinks.mqtt.client import MqttConnection
    from agent.sinks.mqtt.commands import CommandHandler, ReplyTo
    from agent.sinks.mqtt.controls import AgentControls, UpdateChecker
    from agent.sinks.mqtt.forwarder import OutboxForwarder
    from agent.sinks.mqtt.payloads import CommandResult, StatusMessage
    from agent.sinks.mqtt.topics import Topics
    from agent.stats import LatencyHistogram
    from agent.telemetry import TransportTelemetry

log = logging.getLogger(__name__)

_MAX_RESPONSE_TOPIC = 1024


def read_secret(file: Path | None, env: str | None, field: str) -> str | None:
    """A secret from a file (first line) or an environment variable; errors name the config field, never the value."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").splitlines()[0].rstrip("\r") if file.stat().st_size else ""
        except OSError as exc:
            raise ConfigError(
                f"sinks[].{field}_file: cannot read {file}: {exc.strerror}", [(f"sinks[].{field}_file", str(exc.strerror))]
            ) from None
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(
                f"sinks[].{field}_env: environment variable {env} is not set", [(f"sinks[].{field}_env", "not set")]
            )
        return value
    return None


class MqttSink(Sink):
    """Publishes detections, events, telemetry and status to an MQTT broker, through a durable outbox."""

    type_key: ClassVar[str] = "mqtt"
    config_model: ClassVar[type[SinkConfigBase]] = MqttSinkConfig

    def __init__(self, config: MqttSinkConfig) -> None:
        super().__init__(config)
        self.config: MqttSinkConfig = config
        # secrets and TLS files are read now, so a bad one stops the agent before the camera opens
        self._password = read_secret(config.password_file, config.password_env, "password")
        key = config.commands.hmac_key_file
        self._hmac_key = key.read_bytes().strip() if key is not None else None
        if key is not None and not self._hmac_key:
            raise ConfigError(f"sinks[].commands.hmac_key_file: {key} is empty", [("sinks[].commands.hmac_key_file", "empty")])
        self._tls = None
        if config.tls.enabled:
            from agent.sinks.mqtt.client import build_tls_context

            self._tls = build_tls_context(config)
        self.policy: str = config.publish
        self.telemetry_interval_s = config.telemetry_interval_s
        self.update_state = UpdateState()
        self._early_events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=100)
        self._last_counts: dict[str, int] | None = None
        self._last_published_counts: dict[str, int] | None = None
        self.config_hash: str | None = None
        self._stop = threading.Event()
        self.reporter = Reporter(self)
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=256)
        self._threads: list[threading.Thread] = []
        self.forwarder: OutboxForwarder | None = None
        self.conn: MqttConnection | None = None
        self.commands: CommandHandler | None = None
        self.controls: AgentControls | None = None
        self.pipeline: Pipeline | None = None
        self.topics: Topics | None = None
        self.device_id = ""
        self.state_dir = Path(".")
        self._extra_subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self._update_checker: UpdateChecker | None = None

    # ---- lifecycle ------------------------------------------------------------------
    def start(self, pipeline: Pipeline) -> None:
        from agent.sinks.mqtt.client import MqttConnection
        from agent.sinks.mqtt.commands import CommandHandler, HmacVerifier
        from agent.sinks.mqtt.controls import AgentControls
        from agent.sinks.mqtt.forwarder import OutboxForwarder
        from agent.sinks.mqtt.outbox import OutboxStore
        from agent.sinks.mqtt.topics import Topics

        cfg = self.config
        ctx = self.context or AgentContext.defaults()
        self.context, self.pipeline = ctx, pipeline
        self.device_id, self.state_dir = ctx.device_id, ctx.state_dir
        self.config_hash = config_hash(ctx.config) if ctx.config is not None else None
        self.topics = topics = Topics.for_device(ctx.device_id, cfg.topic_prefix)
        subscriptions: list[str] = []
        if cfg.commands.enabled:
            subscriptions.append(topics.commands)
        if cfg.home_assistant.enabled:
            subscriptions.append(f"{cfg.home_assistant.discovery_prefix}/status")
        subscriptions.extend(self._extra_subscriptions)
        self.conn = conn = MqttConnection(
            cfg,
            cfg.client_id or ctx.device_id,
            topics,
            password=self._password,
            tls_context=self._tls,
            subscriptions=tuple(subscriptions),
            on_connected=self._on_connected,
            on_message=self._on_message,
            on_ack=lambda mid, ok: self.forwarder.ack(mid, ok) if self.forwarder else None,
        )
        ob = cfg.outbox
        path = ob.path or ctx.state_dir / "mqtt-outbox.sqlite"

        def open_store() -> OutboxStore:
            try:
                return OutboxStore(
                    path,
                    ctx.device_id,
                    max_rows=ob.max_rows,
                    max_bytes=ob.max_bytes,
                    max_age_s=ob.max_age_s,
                    synchronous=ob.synchronous,
                )
            except OSError as exc:
                raise ConfigError(
                    f"sinks[].outbox.path: cannot open {path}: {exc}", [("sinks[].outbox.path", str(exc))]
                ) from None
            except sqlite3.Error as exc:  # e.g. an I/O error: exit 1, so systemd tries again later (not a config error)
                raise AgentError(f"cannot open the MQTT outbox {path}: {exc}; free space or check the disk") from None

        self.forwarder = OutboxForwarder(
            open_store,
            conn,
            topics,
            handoff_limit=ob.handoff_queue,
            window=cfg.max_queued_messages - 32,  # leave room in paho's queue for status, results, snapshots
            replay_rate_per_s=ob.replay_rate_per_s,
        )
        self.forwarder.start()
        store = self.forwarder.store
        if store is not None and store.recovered_corrupt is not None:
            self._early_events.append(("outbox_recovered", {"moved_to": str(store.recovered_corrupt)}))
        if store is not None and store.rows:
            log.info("outbox holds %d message(s) from before; they will be sent first", store.rows)
        self.controls = AgentControls(
            pipeline,
            ctx,
            cfg.commands,
            run_later=self.run_later,
            publish_jpeg=lambda jpeg: self.publish(topics.snapshot, jpeg, qos=1),
            apply_live_config=self._apply_live_config,
            get_policy=lambda: self.policy,
            set_policy=self._set_policy,
            on_config_reloaded=self._config_reloaded,
        )
        self.controls.update_checker = self._update_checker
        verifier = HmacVerifier(self._hmac_key, cfg.commands.hmac_max_skew_s) if self._hmac_key else None
        self.commands = CommandHandler(ctx.device_id, self.controls, self._reply, verifier)
        while self._early_events:
            self.forwarder.submit(Kind.EVENT, self._early_events.popleft())
        self._spawn("mqtt-commands", self._command_loop)
        self.reporter.start()
        conn.start()
        log.info(
            "mqtt sink: %s as %s, topics %s/..., outbox %s", conn.broker, cfg.client_id or ctx.device_id, topics.prefix, path
        )

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def flush(self) -> None:
        if self.forwarder is not None and not self.forwarder.flush(self.config.outbox.flush_timeout_s):
            log.info("mqtt: %d message(s) still unacknowledged at shutdown; they stay in the outbox", self.forwarder.inflight)

    def close(self) -> None:
        if self.conn is None:
            return
        self._stop.set()
        self.reporter.stop()
        self._tasks.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        if self.conn.connected:
            self.reporter.publish_status(state="stopped")
        self.conn.stop()
        if self.forwarder is not None:
            self.forwarder.stop()
        self.reporter.write_status_file(None, state="stopped")
        self.conn = None

    # ---- the pipeline thread: cheap, never blocks --------------------------------------
    def emit(self, result: DetectionResult) -> None:
        fwd = self.forwarder
        if fwd is None:
            return
        counts: dict[str, int] = {}
        for det in result.detections:
            counts[det.label] = counts.get(det.label, 0) + 1
        if counts != self._last_counts:
            self._last_counts = counts
            fwd.submit_counts(
                CountsMessage.model_construct(
                    device_id=self.device_id, frame_id=result.frame_id, time=result.capture_time, counts=counts
                )
            )
        policy = self.policy
        if policy == "with_detections" and not counts:
            return
        if policy == "on_change":
            if counts == self._last_published_counts:
                return
            self._last_published_counts = counts
        fwd.submit(Kind.DETECTION, result)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if self.forwarder is None:
            self._early_events.append((kind, data))
            return
        self.forwarder.submit(Kind.EVENT, (kind, data))
        if kind == "model_changed":
            self.reporter.dirty.set()
            if self.config.home_assistant.enabled:
                self.run_later(self._announce)

    # ---- hooks for other parts of the agent (the OTA updater) -------------------------
    def set_update_state(self, state: UpdateState) -> None:
        """Report the updater's state in the retained status (and the status file)."""
        self.update_state = state
        self.reporter.dirty.set()

    def set_update_checker(self, checker: UpdateChecker) -> None:
        """What the ``check_update`` command runs (until set, it answers ``not_available``)."""
        self._update_checker = checker
        if self.controls is not None:
            self.controls.update_checker = checker

    def subscribe(self, topic: str, callback: Callable[[str, bytes], None]) -> None:
        """Deliver messages on ``topic`` (a filter; QoS 1) to ``callback`` on the command worker thread.

        Call before the pipeline starts (the fleet notification topic of the updater).
        """
        if self.conn is not None:
            raise RuntimeError("subscribe() must be called before the MQTT sink starts")
        self._extra_subscriptions[topic] = callback

    # ---- callbacks from paho's thread: queue the work ---------------------------------
    def run_later(self, task: Callable[[], None]) -> bool:
        try:
            self._tasks.put_nowait(task)
            return True
        except queue.Full:
            return False

    def _on_connected(self) -> None:
        if self.forwarder is not None:
            self.forwarder.connected()
        self.run_later(self._after_connect)

    def _after_connect(self) -> None:
        self.reporter.publish_status()
        if self.config.home_assistant.enabled:
            self._announce()

    def _on_message(self, topic: str, payload: bytes, props: Any) -> None:
        from agent.sinks.mqtt.commands import ReplyTo

        assert self.topics is not None and self.commands is not None
        name = self.topics.command_name(topic)
        if name is None:
            for pattern, callback in self._extra_subscriptions.items():
                if topic_matches_sub(pattern, topic):
                    self.run_later(lambda cb=callback: cb(topic, payload))  # type: ignore[misc]
                    return
            ha = self.config.home_assistant
            if ha.enabled and topic == f"{ha.discovery_prefix}/status" and payload.strip() == b"online":
                self.run_later(self._announce)  # Home Assistant (re)started: announce again
            return
        reply_to = None
        if props is not None and (getattr(props, "ResponseTopic", None) or getattr(props, "CorrelationData", None)):
            reply_to = ReplyTo(getattr(props, "ResponseTopic", None), getattr(props, "CorrelationData", None))
        handler = self.commands
        if not self.run_later(lambda: _discard(handler.handle(name, payload, reply_to))):
            from agent.sinks.mqtt.commands import CommandFailed

            handler.answer(name, None, CommandFailed("busy", "the command queue is full; retry later"), reply_to)

    # ---- the command worker ------------------------------------------------------------
    def _command_loop(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=0.2)
            except queue.Empty:
                task = None
                if self._stop.is_set():
                    return
            if task is None and self._stop.is_set():
                return
            try:
                if task is not None:
                    task()
                if self.controls is not None:
                    self.controls.expire_snapshots()
            except Exception as exc:
                log.exception("mqtt command worker: %s", exc)

    def _reply(self, name: str, result: CommandResult, reply_to: ReplyTo | None) -> None:
        assert self.topics is not None
        payload = result.model_dump_json()
        self.publish(self.topics.command_result(name), payload, qos=1)
        if reply_to is not None and reply_to.topic and _valid_topic(reply_to.topic):
            from agent.sinks.mqtt.client import publish_properties

            self.publish(
                reply_to.topic,
                payload,
                qos=1,
                properties=publish_properties("application/json", (reply_to.topic, reply_to.correlation)),
            )

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, properties: Any = None) -> bool:
        """Publish outside the outbox (status, results, snapshots): best effort, True when handed to paho."""
        if self.conn is None:
            return False
        rc, _ = self.conn.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        return rc == 0

    def _announce(self) -> None:
        from agent.sinks.mqtt.discovery import discovery_payload, discovery_topic

        if self.pipeline is None or self.topics is None:
            return
        ha = self.config.home_assistant
        labels = ha.labels or list(self.pipeline.detector.labels)
        doc = discovery_payload(self.device_id, self.topics, labels, self.pipeline.detector.ref)
        self.publish(discovery_topic(ha.discovery_prefix, self.device_id), json.dumps(doc), qos=1)

    # ---- what other parts of the agent read (the HTTP API) --------------------------------
    def status(self, state: str = "running") -> StatusMessage:
        """The retained status as it stands now."""
        return self.reporter.status(state)

    def transport_telemetry(self) -> tuple[TransportTelemetry, LatencyHistogram | None]:
        """Broker connection and outbox figures, plus the capture-to-ack histogram (for a TelemetryCollector)."""
        return self.reporter.transport_telemetry()

    # ---- live configuration --------------------------------------------------------------
    def _set_policy(self, policy: str) -> None:
        self.policy = policy
        self._last_published_counts = None
        self.reporter.dirty.set()

    def _apply_live_config(self, cfg: MqttSinkConfig | None) -> dict[str, Any]:
        applied: dict[str, Any] = {}
        if cfg is None:
            return applied
        if cfg.publish != self.policy:
            self._set_policy(cfg.publish)
            applied["publish"] = cfg.publish
        if cfg.telemetry_interval_s != self.telemetry_interval_s:
            self.telemetry_interval_s = cfg.telemetry_interval_s
            applied["telemetry_interval_s"] = cfg.telemetry_interval_s
        return applied

    def _config_reloaded(self, new_hash: str | None) -> None:
        if new_hash is not None:
            self.config_hash = new_hash
        self.reporter.dirty.set()


def _discard(_: Any) -> None:
    return None


def _valid_topic(topic: str) -> bool:
    return 0 < len(topic) <= _MAX_RESPONSE_TOPIC and not any(c in topic for c in "+#\x00")
