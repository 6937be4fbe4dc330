"""The source registry, build_source and the discriminated config union."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from agent.sources import SOURCES, build_source, source_config_union
from agent.sources.images import ImagesConfig, ImagesSource
from agent.sources.opencv import OpenCVSource
from agent.sources.picamera2 import Picamera2Source
from agent.sources.synthetic import SyntheticConfig, SyntheticSource


class _AgentConfig(BaseModel):  # how the agent's config file embeds a source
    source: source_config_union()  # type: ignore[valid-type]


def test_every_plugin_is_registered() -> None:
    assert dict(SOURCES.items()) == {
        "images": ImagesSource,
        "opencv": OpenCVSource,
        "picamera2": Picamera2Source,
        "synthetic": SyntheticSource,
    }


def test_union_picks_the_model_by_type() -> None:
    cfg = _AgentConfig.model_validate({"source": {"type": "opencv", "id": "door", "url": "rtsp://cam/1"}})
    assert type(cfg.source).__name__ == "OpenCVConfig" and cfg.source.id == "door"
    src = build_source(cfg.source)
    assert isinstance(src, OpenCVSource) and src.config is cfg.source
    cfg = _AgentConfig.model_validate({"source": {"type": "synthetic", "fps": 0}})
    assert isinstance(build_source(cfg.source), SyntheticSource)


def test_union_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        _AgentConfig.model_validate({"source": {"type": "webcam"}})
    assert "'images', 'opencv', 'picamera2', 'synthetic'" in str(err.value)
    with pytest.raises(ValidationError) as err:
        _AgentConfig.model_validate({"source": {"type": "synthetic", "fsp": 10}})
    assert err.value.errors()[0]["loc"] == ("source", "synthetic", "fsp")


def test_every_config_field_is_documented() -> None:
    for key, cls in SOURCES.items():
        for name, info in cls.config_model.model_fields.items():
            assert info.description, f"{key}.{name} has no description"


def test_build_source_rejects_a_mismatched_config() -> None:
    class Odd(SyntheticConfig):
        pass

    assert isinstance(build_source(Odd()), SyntheticSource)  # a subclass is still the right model
    bad = ImagesConfig.model_construct(type="synthetic", path="x", id="cam0", loop=False)
    with pytest.raises(TypeError, match="needs a SyntheticConfig"):
        build_source(bad)
