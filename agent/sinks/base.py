"""The sink contract: where results go. One file per sink; the MQTT sink plugs in here too."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agent.schema import DetectionResult

if TYPE_CHECKING:
    from agent.pipeline import Pipeline


class SinkConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sink(ABC):
    """Receives every result, in order, on the pipeline thread: ``emit`` must not block for long."""

    type_key: ClassVar[str]
    config_model: ClassVar[type[SinkConfigBase]]

    def __init__(self, config: SinkConfigBase) -> None:
        self.config = config

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
