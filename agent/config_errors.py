"""Config validation failures as a user can act on them: the YAML path as written, the bad value, what is allowed.

pydantic reports a location inside its own models: ``source.synthetic.fps`` (the plugin's tag in the
middle) and ``sinks.0.mqtt.port``. A user wrote ``source.fps`` and ``sinks[0].port``; that is what we
print. A value that came from an ``EDGE_AGENT_...`` environment override names the variable, so
nobody searches the file for a value that is not in it.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from agent.errors import ConfigError
from agent.sinks import SINKS
from agent.sources import SOURCES

# the config sections whose value is a plugin union: the tag pydantic puts into the location is not in the file
_SOURCE_FIELD = "source"
_SINKS_FIELD = "sinks"

_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60
_SHORT.maxlevel = 2
_SHORT.maxdict = _SHORT.maxlist = 4


def show_value(value: Any) -> str:
    """A short repr, bounded however large or deep the value is (a hostile file cannot make this slow)."""
    return _SHORT.repr(value)


def _plugin_model(registry: Any, tag: Any) -> type[BaseModel] | None:
    try:
        return registry.get(tag).config_model  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - an unknown tag is already its own error
        return None


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The one pydantic model inside ``annotation`` (``X``, ``X | None``, ``list[X]``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = [m for m in (_nested_model(a) for a in get_args(annotation)) if m is not None]
    return found[0] if len(found) == 1 else None


def _walk(loc: Sequence[int | str], root: type[BaseModel]) -> tuple[list[int | str], type[BaseModel] | None]:
    """The location without plugin tags, and the model the last element belongs to (for "allowed keys")."""
    path: list[int | str] = []
    model: type[BaseModel] | None = root
    registry: Any = None  # set when the next element may be a plugin tag
    for part in loc:
        if registry is not None and isinstance(part, str) and part in registry.keys():  # noqa: SIM118 - a Registry, not a dict
            model, registry = _plugin_model(registry, part), None
            continue
        if isinstance(part, int):
            path.append(part)
            continue
        registry = None
        path.append(part)
        if len(path) == 1 and part == _SOURCE_FIELD:
            model, registry = None, SOURCES
        elif path == [_SINKS_FIELD]:
            model, registry = None, SINKS
        elif model is not None and part in model.model_fields:
            model = _nested_model(model.model_fields[part].annotation)
        else:
            model = None
    return path, model


def yaml_path(parts: Sequence[int | str]) -> str:
    """``["sinks", 0, "port"]`` -> ``sinks[0].port``: the path as the user wrote it in YAML."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def env_overrides(environ: Mapping[str, str], prefix: str, fields: Sequence[str]) -> dict[tuple[str, ...], str]:
    """Environment variables that override config fields: ``("model", "threads") -> "EDGE_AGENT_MODEL__THREADS"``."""
    found: dict[tuple[str, ...], str] = {}
    for name in environ:
        if name.upper().startswith(prefix.upper()):
            key = tuple(name[len(prefix) :].lower().split("__"))
            if key and key[0] in fields:
                found[key] = name
    return found


def _env_source(path: Sequence[int | str], overrides: Mapping[tuple[str, ...], str]) -> str | None:
    as_text = tuple(str(p).lower() for p in path)
    hits = [key for key in overrides if as_text[: len(key)] == key]
    return overrides[max(hits, key=len)] if hits else None


def _allowed(err: Mapping[str, Any], field: str, model: type[BaseModel] | None) -> str:
    """What to write instead: the known keys (with a near match first) for an unknown one."""
    if err["type"] != "extra_forbidden" or model is None:
        return ""
    known = sorted(model.model_fields)
    close = difflib.get_close_matches(field, known, n=1)
    hint = f" did you mean {close[0]!r}?" if close else ""
    return f";{hint} allowed keys: {', '.join(known)}"


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "not a known setting here"
    return str(err["msg"]).removeprefix("Value error, ")


def format_validation_error(
    exc: ValidationError, origin: str, root: type[BaseModel], overrides: Mapping[tuple[str, ...], str]
) -> ConfigError:
    """One :class:`ConfigError` listing every problem as ``yaml.path: what is wrong (got value); what is allowed``."""
    problems: list[tuple[str, str]] = []
    from_env = 0
    for err in exc.errors(include_url=False, include_context=False):
        parts, _ = _walk(err["loc"], root)
        if err["type"] == "union_tag_not_found":
            known = ", ".join(SINKS.keys() if parts and parts[0] == _SINKS_FIELD else SOURCES.keys())
            parts = [*parts, "type"]
            text = f"missing; choose one of {known}"
        elif err["type"] == "union_tag_invalid":
            parts = [*parts, "type"]
            text = _message(err)
        else:
            # an unknown key: the model that holds it lists what is allowed there
            parent = _walk(err["loc"][:-1], root)[1] if err["type"] == "extra_forbidden" else None
            shown = "" if err["type"] == "missing" else f" (got {show_value(err.get('input'))})"
            text = f"{_message(err)}{shown}{_allowed(err, str(parts[-1]) if parts else '', parent)}"
        variable = _env_source(parts, overrides)
        if variable is not None:
            from_env += 1
            text = f"{text} [from environment variable {variable}]"
        problems.append((yaml_path(parts), text))
    if from_env == len(problems):
        where = "environment overrides (EDGE_AGENT_...)"
    elif from_env:
        where = f"{origin} and environment overrides (EDGE_AGENT_...)"
    else:
        where = origin
    lines = "\n".join(f"  {p}: {m}" for p, m in problems)
    return ConfigError(f"{where}: {len(problems)} error(s):\n{lines}", problems)


_SETTINGS_FIELD = re.compile(r'field "(?P<field>[^"]+)"')


def format_settings_error(exc: Exception, prefix: str, environ: Mapping[str, str]) -> ConfigError:
    """pydantic-settings could not parse an environment override (a section given as text that is not JSON)."""
    match = _SETTINGS_FIELD.search(str(exc))
    field = match.group("field") if match else "?"
    variable = next((n for n in environ if n.upper() == f"{prefix}{field}".upper()), f"{prefix}{field.upper()}")
    value = environ.get(variable, "")
    return ConfigError(
        f"environment variable {variable}={show_value(value)} is not valid JSON for the `{field}` section; "
        f"give JSON (e.g. {variable}='{{...}}') or set one field at a time ({prefix}{field.upper()}__<FIELD>=...)",
        [(field, f"environment variable {variable} is not JSON")],
    )
