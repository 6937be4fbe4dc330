"""The config reference as Markdown, generated from the pydantic models (README keeps a copy).

``edge-agent config docs`` prints it; a test fails when the README's copy is stale.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agent.config import AgentConfig
from agent.sinks import SINKS
from agent.sources import SOURCES

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        factory = field.default_factory
        if factory in (dict, list):
            return f"`{json.dumps(factory())}`"
        return "computed"
    if field.default is PydanticUndefined:
        return "required"
    value = field.default
    if hasattr(value, "value"):
        value = value.value
    return f"`{json.dumps(value)}`"


def _type(field: FieldInfo) -> str:
    args = get_args(field.annotation)
    if get_origin(field.annotation) is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")
    for noise in ("<class '", "'>"):
        text = text.replace(noise, "")
    return text.replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        path = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, f"{path}."))
            continue
        if name in ("source", "sinks") and model is AgentConfig:
            default = '`{"type": "synthetic"}`' if name == "source" else '`[{"type": "jsonl"}]`'
            rows.append(f"| `{path}` | one of the plugins below | {default} | {field.description} |")
            continue
        rows.append(f"| `{path}` | {_type(field)} | {_default(field)} | {field.description or ''} |")
    return rows


def _plugin_sections(title: str, key: str, registry: Any) -> list[str]:
    lines = []
    for type_key, cls in registry.items():
        lines += [
            "",
            f"**{title} `{type_key}`** (`{key}.type: {type_key}`)",
            "",
            "| field | type | default | meaning |",
            "|---|---|---|---|",
        ]
        lines += [r for r in _rows(cls.config_model, f"{key}.") if not r.startswith(f"| `{key}.type`")]
    return lines


def config_reference() -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    lines += _rows(AgentConfig, "")
    lines += _plugin_sections("Source", "source", SOURCES)
    lines += _plugin_sections("Sink", "sinks[]", SINKS)
    return "\n".join(lines) + "\n"
