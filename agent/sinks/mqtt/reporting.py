"""What the sink reports about the agent: the retained status, periodic telemetry, the status file.

One ``mqtt-ticker`` thread: telemetry every ``telemetry_interval_s`` (into the outbox, like any
message), ``<state_dir>/status.json`` every ``status_file_interval_s`` (for ``edge-agent status``),
and the retained status whenever something in it changed. Each of the two consumers owns a
:class:`~agent.telemetry.TelemetryCollector`, so their percentile windows stay separate.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from agent.sinks.mqtt.outbox import Kind
from agent.sinks.mqtt.payloads import StatusMessage
from agent.stats import LatencyHistogram
from agent.status_file import STATUS_FILE, write_status_file
from agent.telemetry import AgentStatus, TelemetryCollector, TransportTelemetry

if TYPE_CHECKING:
    from agent.sinks.mqtt.sink import MqttSink

log = logging.getLogger(__name__)


class Reporter:
    """Status, telemetry and the status file of one :class:`~agent.sinks.mqtt.sink.MqttSink`."""

    def __init__(self, sink: MqttSink) -> None:
        self.sink = sink
        self.started_at = time.time()
        self.dirty = threading.Event()  # the retained status should be published again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file_telemetry: dict[str, Any] | None = None
        self._file_error_logged = -1e9  # a full disk fails every write: one line per 5 min, not one per interval

    # ---- building -------------------------------------------------------------------------
    def status(self, state: str = "running") -> StatusMessage:
        sink = self.sink
        p, topics = sink.pipeline, sink.topics
        assert p is not None and topics is not None
        base = AgentStatus(
            device_id=sink.device_id,
            state=state,
            started_at=self.started_at,
            uptime_s=time.time() - self.started_at,
            model=p.detector.ref,
            thresholds=p.detector.decoder.thresholds.model_dump(),
            source={"id": p.source.config.id, "type": p.source.type_key, "connected": p.source.stats.connected},
            config_hash=sink.config_hash,
            update=sink.update_state,
        )
        return StatusMessage(**base.model_dump(), publish_policy=sink.policy, topic_prefix=topics.prefix)

    def transport_telemetry(self) -> tuple[TransportTelemetry, LatencyHistogram | None]:
        fwd, conn = self.sink.forwarder, self.sink.conn
        assert fwd is not None
        store = fwd.store
        oldest = fwd.oldest_created
        return (
            TransportTelemetry(
                connected=bool(conn and conn.connected),
                reconnects=conn.reconnects if conn else 0,
                outbox_rows=store.rows if store else 0,
                outbox_bytes=store.bytes if store else 0,
                outbox_oldest_age_s=None if oldest is None else max(time.time() - oldest, 0.0),
                published=fwd.published,
                acknowledged=fwd.acked,
                acknowledged_detections=fwd.acked_detections,
                published_unpersisted=fwd.unpersisted,
                outbox_write_failures=store.counters.write_failures if store else 0,
                dropped=fwd.dropped(),
            ),
            fwd.capture_to_ack,
        )

    def collector(self) -> TelemetryCollector:
        p = self.sink.pipeline
        assert p is not None
        return TelemetryCollector(p.stats, lambda: p.detector.ref, self.sink.state_dir, self.transport_telemetry)

    # ---- publishing -------------------------------------------------------------------------
    def publish_status(self, state: str = "running") -> None:
        sink = self.sink
        if sink.topics is not None and sink.pipeline is not None:
            sink.publish(sink.topics.status, self.status(state).model_dump_json(), qos=1, retain=True)

    def write_status_file(self, collector: TelemetryCollector | None, state: str = "running") -> None:
        sink = self.sink
        if sink.config.status_file_interval_s <= 0 or sink.pipeline is None:
            return
        if collector is not None:  # the final write (at close) keeps the last sample
            self._file_telemetry = collector.collect().model_dump(mode="json")
        conn, fwd = sink.conn, sink.forwarder
        doc = {
            "written_at": time.time(),
            "pid": os.getpid(),
            "device_id": sink.device_id,
            "status": self.status(state).model_dump(mode="json"),
            "telemetry": self._file_telemetry,
            "mqtt": {
                "broker": conn.broker if conn else None,
                "connected": bool(conn and conn.connected),
                "last_error": conn.last_error if conn else None,
                "last_connected_at": conn.last_connected_at if conn else None,
                "replaying_backlog": bool(fwd and fwd.backlog_replaying),
            },
        }
        try:
            sink.state_dir.mkdir(parents=True, exist_ok=True)
            write_status_file(sink.state_dir / STATUS_FILE, doc)
        except OSError as exc:
            if time.monotonic() - self._file_error_logged > 300:
                self._file_error_logged = time.monotonic()
                log.warning("cannot write %s: %s (said once per 5 min)", sink.state_dir / STATUS_FILE, exc)

    # ---- the ticker thread --------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-ticker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        sink = self.sink
        telemetry, status_file = self.collector(), self.collector()
        next_telemetry = time.monotonic() + sink.telemetry_interval_s
        next_file = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if sink.telemetry_interval_s > 0 and now >= next_telemetry and sink.forwarder is not None:
                    next_telemetry = now + sink.telemetry_interval_s
                    sink.forwarder.submit(Kind.TELEMETRY, telemetry.collect())
                    self.dirty.set()  # refresh the uptime in the retained status too
                if sink.config.status_file_interval_s > 0 and now >= next_file:
                    next_file = now + sink.config.status_file_interval_s
                    self.write_status_file(status_file)
                if self.dirty.is_set():
                    self.dirty.clear()
                    sink.run_later(self.publish_status)
            except Exception as exc:  # telemetry must never take the agent down: log and go on
                log.exception("mqtt ticker: %s", exc)
            self._stop.wait(0.1)
