"""The ``mqtt`` sink's settings (one entry of the ``sinks:`` list, ``type: mqtt``).

Nothing secret lives here: the password and the command HMAC key are read from a file or
an environment variable named here, when the sink is built, and never logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.sinks.base import SinkConfigBase

PublishPolicy = Literal["every_frame", "with_detections", "on_change"]
_TOPIC_FORBIDDEN = ("+", "#", "\x00")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_file(path: Path | None, what: str) -> Path | None:
    if path is not None and not path.expanduser().is_file():
        raise ValueError(f"{what} {path} does not exist or is not a file")
    return path.expanduser() if path is not None else None


class TlsConfig(_Section):
    enabled: bool = Field(False, description="Connect over TLS (the port then defaults to 8883).")
    ca_file: Path | None = Field(None, description="PEM CA bundle that signed the broker's certificate. Empty: the system CAs.")
    cert_file: Path | None = Field(None, description="PEM client certificate, when the broker requires one.")
    key_file: Path | None = Field(None, description="PEM private key of the client certificate.")
    check_hostname: bool = Field(True, description="Check the broker certificate names `host`. Turn off only on a test bench.")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        return _check_file(v, "file")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both for a client certificate, or neither")
        return self


class ReconnectConfig(_Section):
    min_delay_s: float = Field(1.0, ge=0.1, le=600, description="First reconnect delay; doubles on each failed attempt.")
    max_delay_s: float = Field(60.0, ge=0.1, le=3600, description="Longest delay between reconnect attempts.")

    @model_validator(mode="after")
    def _order(self) -> ReconnectConfig:
        if self.max_delay_s < self.min_delay_s:
            raise ValueError(f"max_delay_s ({self.max_delay_s}) must be >= min_delay_s ({self.min_delay_s})")
        return self


class OutboxConfig(_Section):
    path: Path | None = Field(None, description="SQLite file of the durable outbox. Empty: `<state_dir>/mqtt-outbox.sqlite`.")
    max_rows: int = Field(100_000, ge=100, description="Most messages kept while the broker is unreachable.")
    max_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024, description="Most payload bytes kept while the broker is unreachable.")
    max_age_s: float = Field(
        7 * 24 * 3600.0, ge=0, description="Messages older than this are dropped (counted as expired); 0 = no age limit."
    )
    replay_rate_per_s: float = Field(
        200.0,
        ge=0,
        description="Messages per second while a backlog replays after a reconnect or restart (0 = unlimited). "
        "Must exceed the live message rate; once caught up, live messages are not throttled.",
    )
    handoff_queue: int = Field(
        2000,
        ge=16,
        le=1_000_000,
        description="Messages waiting for the outbox writer thread; beyond it new ones are dropped "
        "and counted (inference never waits for the disk or the broker).",
    )
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL",
        description="SQLite fsync policy. NORMAL (WAL): survives a crash or kill of the agent; FULL: also a power cut, "
        "at one fsync per batch (SD-card wear).",
    )
    flush_timeout_s: float = Field(3.0, ge=0, le=120, description="At shutdown, how long to wait for in-flight acknowledgements.")


class CommandsConfig(_Section):
    enabled: bool = Field(True, description="Subscribe to `<prefix>/cmd/#` and answer on `<prefix>/cmd/<name>/result`.")
    hmac_key_file: Path | None = Field(
        None, description="Shared key file: when set, every command must carry a valid HMAC-SHA256 (see README)."
    )
    hmac_max_skew_s: float = Field(
        300.0,
        ge=0,
        description="Signed commands whose `ts` is further than this from the device clock are refused (0 = no check).",
    )
    snapshot_dir: Path | None = Field(None, description="Where `snapshot` saves JPEGs. Empty: `<state_dir>/snapshots`.")
    snapshot_keep: int = Field(20, ge=1, le=10_000, description="Saved snapshots kept; older ones are deleted.")
    snapshot_timeout_s: float = Field(5.0, gt=0, le=120, description="How long `snapshot` waits for the next frame.")
    snapshot_jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of snapshots (overridable per command).")

    @field_validator("hmac_key_file")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        return _check_file(v, "HMAC key file")


class HomeAssistantConfig(_Section):
    enabled: bool = Field(False, description="Announce the device to Home Assistant (MQTT device-based discovery).")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix.")
    labels: list[str] = Field(
        default_factory=list,
        description="Labels that get a count sensor and a 'detected' binary sensor. Empty: every model label.",
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        return check_topic_prefix(v)


def check_topic_prefix(value: str) -> str:
    """A topic prefix is one or more non-empty levels without wildcards."""
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError(f"{value!r} is not a valid topic prefix: no empty levels, no leading or trailing '/'")
    if any(c in value for c in _TOPIC_FORBIDDEN):
        raise ValueError(f"{value!r} is not a valid topic prefix: it must not contain '+', '#' or NUL")
    return value


class MqttSinkConfig(SinkConfigBase):
    """Settings of the ``mqtt`` sink: connection, topics, outbox, telemetry, commands, Home Assistant."""

    type: Literal["mqtt"] = Field("mqtt", description="Selects the MQTT sink.")
    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or address.")
    port: int | None = Field(None, ge=1, le=65535, description="Broker port. Empty: 1883, or 8883 with TLS.")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version: 5 (default) or 3.1.1.")
    client_id: str | None = Field(None, description="MQTT client id. Empty: the device id.")
    topic_prefix: str | None = Field(None, description="Prefix of every topic. Empty: `edge/<device_id>`.")
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="MQTT keepalive; the broker declares the device offline after 1.5x this."
    )
    username: str | None = Field(None, description="Broker user name.")
    password_file: Path | None = Field(None, description="File holding the broker password (first line). Never logged.")
    password_env: str | None = Field(None, description="Environment variable holding the broker password. Never logged.")
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings.")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="Reconnect back-off.")
    max_inflight: int = Field(50, ge=1, le=1000, description="QoS 1 messages on the wire awaiting the broker's PUBACK.")
    max_queued_messages: int = Field(
        500,
        ge=64,
        le=100_000,
        description="Bound on paho's in-memory queue (QoS 1 messages handed over and not yet acknowledged); "
        "the outbox holds everything beyond it.",
    )
    publish: PublishPolicy = Field(
        "with_detections",
        description="Which frames become detection messages: every_frame, with_detections (at least one), or on_change "
        "(the set of label counts differs from the last published frame).",
    )
    telemetry_interval_s: float = Field(30.0, ge=0, description="Seconds between telemetry messages (0 = none).")
    status_file_interval_s: float = Field(
        2.0, ge=0, description="Seconds between rewrites of `<state_dir>/status.json` for `edge-agent status` (0 = none)."
    )
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Durable store-and-forward outbox.")
    commands: CommandsConfig = Field(default_factory=CommandsConfig, description="Remote commands.")
    home_assistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig, description="Home Assistant discovery.")

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        aliases = {5: "5", "v5": "5", "mqttv5": "5", "311": "3.1.1", "v3.1.1": "3.1.1", "mqttv311": "3.1.1"}
        return aliases.get(v.lower() if isinstance(v, str) else v, v)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return None if v is None else check_topic_prefix(v)

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, v: Path | None) -> Path | None:
        return _check_file(v, "password file")

    @model_validator(mode="after")
    def _credentials(self) -> MqttSinkConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        if (self.password_file is not None or self.password_env is not None) and not self.username:
            raise ValueError("a password needs a username: set username")
        if self.max_queued_messages <= self.max_inflight:
            raise ValueError(f"max_queued_messages ({self.max_queued_messages}) must exceed max_inflight ({self.max_inflight})")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls.enabled else 1883
