"""Response bodies of the HTTP API that are not the agent's shared schemas."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="Stable machine-readable reason, e.g. unauthorized, image_too_large, truncated_image.")
    detail: str = Field(description="What is wrong and what to do, for a person.")


class Health(BaseModel):
    status: str = Field(description="Always ok: the process answers.")
    version: str
    uptime_s: float


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(description="Why the agent is not ready; empty when ready.")
    last_frame_age_s: float | None = Field(None, description="Seconds since the last processed frame; None before the first.")
