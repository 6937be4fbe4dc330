"""What the registry signs about a model version, and how a device reads it.

Every model version is one TUF target, ``models/<name>/<version>/<file>``, whose custom
metadata carries ``{"edge": ModelTarget}``. A rollback instruction is a small target
``rollback/<name>.json`` whose custom metadata carries ``{"edge": RollbackInstruction}``.
Both live in the top-level targets metadata, so they are covered by the targets role's
signatures, the snapshot (no mix-and-match) and the timestamp (freshness).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.ota.versions import parse_version

CUSTOM_KEY = "edge"
MODEL_PREFIX = "models/"
ROLLBACK_PREFIX = "rollback/"
Channel = Literal["stable", "canary"]
CHANNELS: tuple[str, ...] = ("stable", "canary")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class _Signed(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # newer registries may add fields


class ModelTarget(_Signed):
    kind: Literal["model"] = "model"
    model: str = Field(pattern=_NAME, description="Model name (the manifest's name unless overridden).")
    version: str = Field(description="Dotted numeric version, strictly increasing per model.")
    channel: Channel = "stable"
    rollout: float = Field(100.0, ge=0, le=100, description="Percent of devices (by bucket) that take this version.")
    min_agent_version: str = Field("0", description="Devices running an older agent skip this version.")
    published_at: float = Field(0.0, description="Unix time of publishing.")
    withdrawn: bool = Field(False, description="Set by a rollback: devices must not take this version any more.")
    manifest: dict[str, Any] = Field(description="The model's manifest (model.json); signed with the rest.")

    @field_validator("version", "min_agent_version")
    @classmethod
    def _dotted(cls, v: str) -> str:
        parse_version(v)
        return v


class RollbackInstruction(_Signed):
    kind: Literal["rollback"] = "rollback"
    model: str = Field(pattern=_NAME)
    to_version: str
    serial: int = Field(ge=1, description="Increases with every instruction for this model; a device applies each once.")
    reason: str = ""
    issued_at: float = 0.0

    @field_validator("to_version")
    @classmethod
    def _dotted(cls, v: str) -> str:
        parse_version(v)
        return v


def model_target_path(model: str, version: str, filename: str) -> str:
    return f"{MODEL_PREFIX}{model}/{version}/{filename}"


def rollback_target_path(model: str) -> str:
    return f"{ROLLBACK_PREFIX}{model}.json"


def to_custom(entry: ModelTarget | RollbackInstruction) -> dict[str, Any]:
    """A target's custom metadata: ``{"edge": <the entry as JSON text>}``.

    TUF signs canonical JSON, which has no floats (rollout 12.5, published_at, the manifest's mean/std,
    thresholds...), so the entry travels as a JSON string; the signature covers it like any other field.
    """
    return {CUSTOM_KEY: entry.model_dump_json()}


def read_custom(custom: dict[str, Any] | None) -> ModelTarget | RollbackInstruction | None:
    """The edge entry of a target's custom metadata; None for targets that are not ours.

    Accepts the JSON text ``to_custom`` writes and a plain object. Raises ValueError when it is unusable.
    """
    entry = (custom or {}).get(CUSTOM_KEY)
    if isinstance(entry, str):
        entry = json.loads(entry)  # JSONDecodeError is a ValueError, like pydantic's ValidationError
    if not isinstance(entry, dict):
        return None
    if entry.get("kind") == "rollback":
        return RollbackInstruction.model_validate(entry)
    return ModelTarget.model_validate(entry)


def accepts_channel(device_channel: str, target_channel: str) -> bool:
    """A stable device takes stable versions; a canary device takes canary and stable ones."""
    return target_channel == "stable" or device_channel == "canary"
