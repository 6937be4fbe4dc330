"""The broker connection: paho-mqtt 2.x, VERSION2 callbacks, MQTT 5 (or 3.1.1), TLS, will, back-off.

paho's network thread owns the socket and reconnects on its own (``connect_async`` +
``loop_start``, delay doubling from ``reconnect.min_delay_s`` to ``max_delay_s``). Callbacks
run on that thread, so they only flip flags and hand work to queues: no SQLite, no waiting.
paho's in-memory queue is bounded (``max_queued_messages``); durability is the outbox's job.

Availability: the will is ``offline`` (retained, QoS 1) on ``<prefix>/availability``; every
connect publishes ``online`` retained; a clean shutdown publishes ``offline`` before
disconnecting (a clean DISCONNECT suppresses the will).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from agent.errors import ConfigError
from agent.sinks.mqtt.config import MqttSinkConfig
from agent.sinks.mqtt.topics import AVAILABLE, NOT_AVAILABLE, Topics

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, Any], None]


def build_tls_context(cfg: MqttSinkConfig) -> ssl.SSLContext:
    """An SSLContext from the ``tls`` section; a bad file is a ConfigError naming the field."""
    tls = cfg.tls
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"sinks[].tls.ca_file: cannot load {tls.ca_file}: {exc}", [("sinks[].tls.ca_file", str(exc))]) from None
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"sinks[].tls.cert_file/key_file: cannot load {tls.cert_file} with {tls.key_file}: {exc}",
                [("sinks[].tls.cert_file", str(exc))],
            ) from None
    ctx.check_hostname = tls.check_hostname
    return ctx


class MqttConnection:
    """One paho client with the agent's conventions; thread-safe ``publish``."""

    def __init__(
        self,
        cfg: MqttSinkConfig,
        client_id: str,
        topics: Topics,
        *,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        subscriptions: tuple[str, ...] = (),
        on_connected: Callable[[], None] | None = None,
        on_message: MessageHandler | None = None,
        on_ack: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.v5 = cfg.protocol == "5"
        self._subscriptions = subscriptions
        self._on_connected = on_connected
        self._on_message = on_message
        self._on_ack = on_ack
        self.connected = False
        self.connects = 0
        self.connect_failures = 0
        self.callback_errors = 0
        self.last_error: str | None = None
        self.last_connected_at: float | None = None
        self.receive_maximum = 65535  # MQTT 5 CONNACK: QoS 1 messages the broker accepts unacknowledged
        self._error_logged_at = 0.0
        self._stopping = threading.Event()

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
            clean_session=None if self.v5 else True,  # state lives in the outbox, not in a broker session
        )
        # paho logs every failed reconnect attempt at ERROR (once a second in an outage); this class
        # reports connection state itself, once per 30 s, so paho speaks only when debugging
        paho_log = logging.getLogger("agent.sinks.mqtt.paho")
        paho_log.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL)
        client.enable_logger(paho_log)
        client.suppress_exceptions = True  # our callbacks catch their own; this is the last line of defence
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        if tls_context is not None:
            client.tls_set_context(tls_context)
        client.will_set(topics.availability, NOT_AVAILABLE, qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect.min_delay_s, cfg.reconnect.max_delay_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(cfg.max_queued_messages)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_connect_fail = self._handle_connect_fail
        self.client = client

    @property
    def reconnects(self) -> int:
        return max(self.connects - 1, 0)

    @property
    def broker(self) -> str:
        return f"{'mqtts' if self.cfg.tls.enabled else 'mqtt'}://{self.cfg.host}:{self.cfg.effective_port}"

    def start(self) -> None:
        """Connect in the background; paho retries (with back-off) until it gets through."""
        self.client.connect_async(self.cfg.host, self.cfg.effective_port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, properties: Properties | None = None
    ) -> tuple[int, int]:
        """Hand a message to paho: ``(rc, mid)``; rc is 0 (sent or queued), NO_CONN (QoS 1 kept queued) or QUEUE_SIZE."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties if self.v5 else None)
        return int(info.rc), info.mid

    def stop(self, timeout_s: float = 2.0) -> None:
        """Publish ``offline`` (retained), disconnect cleanly and stop the network thread."""
        self._stopping.set()
        if self.connected:
            info = self.client.publish(self.topics.availability, NOT_AVAILABLE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish offline before disconnecting: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        self.connected = False

    # ---- callbacks (paho's network thread) -----------------------------------------
    def _log_error(self, message: str) -> None:
        now = time.monotonic()
        if now - self._error_logged_at > 30 or self.last_error != message:  # one line per 30 s while it persists
            log.warning("mqtt %s: %s", self.broker, message)
            self._error_logged_at = now
        self.last_error = message

    def _handle_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._log_error(f"connection refused: {reason_code}")
            return
        try:
            # paho ignores the broker's Receive Maximum; the forwarder keeps its window within it
            self.receive_maximum = int(getattr(properties, "ReceiveMaximum", 65535) or 65535)
            set_nodelay(client)
            self.connected = True
            self.connects += 1
            self.last_connected_at = time.time()
            self.last_error = None
            log.info("mqtt connected to %s (%s)", self.broker, "reconnect" if self.connects > 1 else "first connect")
            client.publish(self.topics.availability, AVAILABLE, qos=1, retain=True)
            for topic in self._subscriptions:
                # MQTT 5 no_local: the agent's own answers on cmd/<name>/result never come back to it
                if self.v5:
                    client.subscribe(topic, options=paho.SubscribeOptions(qos=1, noLocal=True))
                else:
                    client.subscribe(topic, qos=1)
            if self._on_connected is not None:
                self._on_connected()
        except Exception as exc:
            self.callback_errors += 1
            log.exception("mqtt on_connect handler failed: %s", exc)

    def _handle_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        was = self.connected
        self.connected = False
        if not self._stopping.is_set() and was:
            self._log_error(f"disconnected: {reason_code}")

    def _handle_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        self.connect_failures += 1
        self._log_error("cannot reach the broker (will retry with back-off)")

    def _handle_publish(self, _client: paho.Client, _userdata: Any, mid: int, reason_code: Any, _properties: Any) -> None:
        if self._on_ack is not None:
            try:
                self._on_ack(mid, not reason_code.is_failure)
            except Exception as exc:
                self.callback_errors += 1
                log.exception("mqtt ack handler failed: %s", exc)

    def _handle_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is not None:
            try:
                self._on_message(msg.topic, bytes(msg.payload), getattr(msg, "properties", None) if self.v5 else None)
            except Exception as exc:
                self.callback_errors += 1
                log.exception("mqtt message handler failed on %s: %s", msg.topic, exc)


def set_nodelay(client: paho.Client) -> None:
    """Disable Nagle on paho's socket: small QoS 1 publishes otherwise wait up to 40 ms for delayed ACKs."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # plain and TLS sockets; not a websocket wrapper
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError) as exc:
            log.debug("TCP_NODELAY not set: %s", exc)


def publish_properties(content_type: str | None = None, response_to: tuple[str, bytes | None] | None = None) -> Properties:
    """MQTT 5 PUBLISH properties (ignored by :meth:`MqttConnection.publish` on 3.1.1)."""
    from paho.mqtt.packettypes import PacketTypes

    props = Properties(PacketTypes.PUBLISH)
    if content_type:
        props.ContentType = content_type
    if response_to is not None and response_to[1] is not None:
        props.CorrelationData = response_to[1]
    return props


def tool_client(cfg: MqttSinkConfig, client_id: str) -> paho.Client:
    """A plain paho client with the sink's broker settings (TLS, credentials): for ``tail`` and ``bench-mqtt``."""
    from agent.sinks.mqtt.sink import read_secret

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if cfg.protocol == "5" else paho.MQTTv311,
        clean_session=None if cfg.protocol == "5" else True,
    )
    if cfg.username:
        client.username_pw_set(cfg.username, read_secret(cfg.password_file, cfg.password_env, "password"))
    if cfg.tls.enabled:
        client.tls_set_context(build_tls_context(cfg))
    return client
