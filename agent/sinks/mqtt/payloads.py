"""Every MQTT payload the agent publishes or accepts, as pydantic models (exported as JSON Schema).

Messages that go through the outbox share an :class:`Envelope`: a unique ``msg_id`` to
de-duplicate the at-least-once stream, and ``seq``, increasing per device across restarts
(a gap means messages were dropped, which telemetry counts). A detection message carries
the one :class:`~agent.schema.DetectionResult` untouched under ``result``: the transport adds
its metadata beside the result, never inside it.

``edge-agent mqtt schema`` prints :func:`payload_schemas`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.schema import DetectionResult
from agent.telemetry import AgentStatus, TelemetrySnapshot

PAYLOAD_SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Envelope(_Model):
    msg_id: str = Field(
        description="Unique message id `<device_id>/<outbox_id>/<seq>`; redeliveries repeat it: de-duplicate on it."
    )
    seq: int = Field(description="Outbox sequence number, increasing per device across restarts; a gap means dropped messages.")
    device_id: str = Field(description="The device that produced the message.")
    queued_at: float = Field(description="Wall clock (Unix seconds) when the message was committed to the outbox.")


class DetectionMessage(Envelope):
    """``<prefix>/detections``: one processed frame."""

    kind: Literal["detection"] = "detection"
    result: DetectionResult = Field(description="The frame's result, exactly the agent's result schema.")


class EventMessage(Envelope):
    """``<prefix>/events``: something happened (camera_lost, camera_back, model_changed, error, ...)."""

    kind: Literal["event"] = "event"
    event: str = Field(description="What happened.")
    data: dict[str, Any] = Field(default_factory=dict, description="Event details.")


class TelemetryMessage(Envelope):
    """``<prefix>/telemetry``: periodic telemetry."""

    kind: Literal["telemetry"] = "telemetry"
    telemetry: TelemetrySnapshot


class StatusMessage(AgentStatus):
    """``<prefix>/status`` (retained): identity and state; refreshed at connect, on change and with telemetry."""

    publish_policy: str = Field(description="Detection publish policy in force.")
    topic_prefix: str = Field(description="The device's topic prefix.")


class CountsMessage(_Model):
    """``<prefix>/counts`` (retained, QoS 0): label counts of the latest frame, published when they change."""

    device_id: str
    frame_id: int
    time: float = Field(description="Capture wall clock of the frame.")
    counts: dict[str, int] = Field(description="Detections per label; labels not present are absent (count 0).")


class CommandRequest(_Model):
    """``<prefix>/cmd/<name>``: a command. An empty payload is ``{}``."""

    id: str | None = Field(
        None, max_length=128, description="Request id, echoed in the result. Required when commands are signed."
    )
    args: dict[str, Any] = Field(default_factory=dict, description="The command's arguments (see README per command).")
    ts: int | None = Field(None, description="Sender's Unix time in seconds. Required when commands are signed.")
    hmac: str | None = Field(
        None, max_length=128, description="Hex HMAC-SHA256 of the canonical request (see README), when a key is configured."
    )


ErrorCode = Literal[
    "malformed_json",
    "invalid_request",
    "invalid_args",
    "unknown_command",
    "unauthorized",
    "replayed",
    "busy",
    "timeout",
    "failed",
    "not_available",
]


class CommandError(_Model):
    code: ErrorCode = Field(description="Machine-readable reason.")
    message: str = Field(description="What went wrong and what to do.")
    field: str | None = Field(None, description="The offending field (dotted path), when one is to blame.")


class CommandResult(_Model):
    """``<prefix>/cmd/<name>/result`` (and the MQTT 5 response topic, with the request's correlation data)."""

    device_id: str
    command: str = Field(description="The command name from the topic.")
    id: str | None = Field(None, description="The request's id, when it had a readable one.")
    ok: bool = Field(description="True when the command was carried out.")
    result: dict[str, Any] | None = Field(None, description="What the command did (per command).")
    error: CommandError | None = Field(None, description="Why it was not carried out.")
    time: float = Field(description="Wall clock when answered.")


AVAILABILITY_DOC = "`online` (retained, after every connect) or `offline` (retained: the will, and on clean shutdown)"

TOPIC_MODELS: dict[str, type[BaseModel]] = {
    "detections": DetectionMessage,
    "events": EventMessage,
    "telemetry": TelemetryMessage,
    "status": StatusMessage,
    "counts": CountsMessage,
    "cmd/<name>": CommandRequest,
    "cmd/<name>/result": CommandResult,
}


def payload_schemas() -> dict[str, Any]:
    """JSON Schema of every JSON payload, keyed by topic suffix (``<prefix>/<suffix>``)."""
    return {
        "payload_schema_version": PAYLOAD_SCHEMA_VERSION,
        "availability": {"type": "string", "enum": ["online", "offline"], "description": AVAILABILITY_DOC},
        "snapshot": {"contentMediaType": "image/jpeg", "description": "JPEG bytes (not JSON)"},
        **{topic: model.model_json_schema(mode="validation") for topic, model in TOPIC_MODELS.items()},
    }


def envelope_json(msg_id: str, seq: int, device_id: str, queued_at: float, body: str) -> str:
    """An envelope around already-serialized members (``"kind":...,"result":{...}``): no second parse or dump."""
    return f'{{"msg_id":{json.dumps(msg_id)},"seq":{seq},"device_id":{json.dumps(device_id)},"queued_at":{queued_at!r},{body}}}'


def detection_body(result: DetectionResult) -> str:
    return f'"kind":"detection","result":{result.model_dump_json()}'


def event_body(event: str, data: dict[str, Any]) -> str:
    return f'"kind":"event","event":{json.dumps(event)},"data":{json.dumps(data, default=str)}'


def telemetry_body(snapshot: TelemetrySnapshot) -> str:
    return f'"kind":"telemetry","telemetry":{snapshot.model_dump_json()}'
