"""Frame sources: one plugin per file in this folder, found by :data:`SOURCES`.

``synthetic`` (moving shapes with ground truth), ``images`` (a folder or glob), ``opencv``
(V4L2 camera, RTSP/HTTP stream, video file) and ``picamera2`` (Raspberry Pi camera,
zero-copy). Each declares ``type_key`` and a pydantic config with ``type: Literal[...]``;
:func:`source_config_union` joins those configs into the discriminated union the agent's
config file uses, so adding a source touches one new file.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Union

from pydantic import Field

from agent.registry import Registry
from agent.sources.base import FrameSource, SourceConfigBase

SOURCES: Registry[FrameSource] = Registry(sys.modules[__name__], FrameSource, skip=frozenset({"base", "scenes"}))


def build_source(config: SourceConfigBase) -> FrameSource:
    """The source plugin ``config`` describes (its ``type`` field picks the plugin)."""
    key = getattr(config, "type", None)
    if not isinstance(key, str):
        raise TypeError(f"{type(config).__name__} has no 'type' field; use a plugin's config model")
    cls = SOURCES.get(key)
    if not isinstance(config, cls.config_model):
        raise TypeError(f"source type {key!r} needs a {cls.config_model.__name__}, got {type(config).__name__}")
    return cls(config)


def source_config_union() -> Any:
    """``Annotated[Union[<every source config>], Field(discriminator="type")]`` for the agent config."""
    models = tuple(cls.config_model for _, cls in SOURCES.items())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built from a runtime tuple
