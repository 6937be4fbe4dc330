"""Result sinks, one file each: ``jsonl``, ``console`` (and ``mqtt``)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

import agent.sinks as _pkg
from agent.registry import Registry
from agent.sinks.base import Sink, SinkConfigBase

SINKS: Registry[Sink] = Registry(_pkg, Sink)


def sink_config_union() -> Any:
    models = tuple(cls.config_model for _, cls in SINKS.items())
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built at run time


def build_sink(config: SinkConfigBase) -> Sink:
    return SINKS.get(config.type)(config)  # type: ignore[attr-defined]
