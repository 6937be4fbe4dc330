"""The sink contract: where results go. One file per sink; the MQTT sink plugs in here too."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agent.schema import DetectionResult

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.pipeline import Pipeline


class SinkConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


def config_hash(config: BaseModel) -> str:
    """Short sha256 of a configuration's canonical JSON (reported in status, to spot config drift)."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AgentContext:
    """What a sink may need to know about the agent around it: its identity, state directory and config."""

    device_id: str
    state_dir: Path
    config_path: Path | None = None  # the file the config came from (``reload_config`` re-reads it)
    config: AgentConfig | None = None

    @classmethod
    def from_config(cls, config: AgentConfig, config_path: Path | None = None) -> AgentContext:
        return cls(config.device_id, config.state_dir, config_path, config)

    @classmethod
    def defaults(cls) -> AgentContext:
        """The context an unconfigured agent has (hostname as device id, the default state dir)."""
        from agent.config import _default_device_id, _default_state_dir

        return cls(_default_device_id(), _default_state_dir())


class Sink(ABC):
    """Receives every result, in order, on the pipeline thread: ``emit`` must not block for long."""

    type_key: ClassVar[str]
    config_model: ClassVar[type[SinkConfigBase]]
    context: AgentContext | None = None

    def __init__(self, config: SinkConfigBase) -> None:
        self.config = config

    def bind(self, context: AgentContext) -> None:
        """Called by the runner before ``start`` with the agent's device id, state dir and config."""
        self.context = context

    def start(self, pipeline: Pipeline) -> None:  # noqa: B027 - optional hook
        """Called once before the first result, with the running pipeline.

        A sink may keep it to read ``pipeline.stats``, change the detector's thresholds,
        ask for a snapshot (``pipeline.request_snapshot``) or emit events.
        """

    @abstractmethod
    def emit(self, result: DetectionResult) -> None:
        """Take one result. Raise on failure: the pipeline logs and counts it and carries on."""

    def event(self, kind: str, data: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """A pipeline event (camera lost/back, model changed, errors)."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Push out anything buffered (called at shutdown)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; called after ``flush``."""
