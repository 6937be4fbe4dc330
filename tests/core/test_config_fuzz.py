"""Fuzzing ``edge-agent check`` (and a short ``run``) with malformed config files: never a traceback.

Two generators: raw bytes (random, and real config text with bytes replaced or inserted) and
structured mutations of real configs (the systemd template, the README's examples, a config
with every section filled in): a value replaced by one of the wrong type or out of range, a
key deleted, an unknown key added. Every outcome must be one of the documented exit codes:
0 accepted, 2 config error, 3 model error, 4 source error. When ``check`` accepts a config
that is cheap to run (synthetic source, no network), ``run`` must not crash on it either.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.config import AgentConfig, load_config
from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_EXITS = {0, 2, 3, 4}
_FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def _readme_configs() -> list[dict[str, Any]]:
    """The README's YAML examples that are agent configs (their keys are config fields)."""
    found = []
    for block in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        try:
            data = yaml.safe_load(block)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and data and set(data) <= set(AgentConfig.model_fields):
            found.append(data)
    return found


def _full_config() -> dict[str, Any]:
    """Every section present, with a value of the right type: mutations then reach every field."""
    return {
        "device_id": "pi-fuzz",
        "model": {"variant": "onnx-int8", "threads": 1, "score_threshold": 0.4, "iou_threshold": 0.5, "max_detections": 20},
        "source": {"type": "synthetic", "width": 64, "height": 48, "fps": 0, "objects": 2, "seed": 3, "replay": 2},
        "sinks": [
            {"type": "jsonl", "path": "-", "events": False},
            {"type": "console", "refresh_per_second": 2},
            {"type": "mqtt", "host": "127.0.0.1", "port": 1883, "qos": 1, "tls": {"enabled": False}},
        ],
        "pipeline": {"overlap": "off", "frame_timeout_s": 0.5},
        "log": {"level": "WARNING", "format": "plain"},
        "http": {"enabled": False, "port": 8080, "max_pixels": 1000000},
        "update": {"enabled": False, "channel": "stable", "check_interval_s": 60},
    }


SEEDS: list[dict[str, Any]] = [
    yaml.safe_load((ROOT / "systemd" / "config.template.yaml").read_text()),
    *_readme_configs(),
    _full_config(),
]
SEED_TEXTS = [yaml.safe_dump(s, sort_keys=False).encode() for s in SEEDS]

# values of every kind a hand-edited file can hold by mistake
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 65536, 2**31, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "-", "auto", "synthetic", "mqtt", "jsonl", "images", "opencv", "/", "/dev/null", "~", "0.0.0.0"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


def _paths(node: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*here, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*here, index))


def _mutate(data: Any, draw: Any) -> Any:
    """One structured mutation: replace a value, delete a key, or add an unknown one."""
    paths = list(_paths(data))
    path = draw(st.sampled_from(paths))
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if not path:
        return draw(VALUES) if action == "replace" else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "replace":
        parent[last] = draw(VALUES)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[draw(st.sampled_from(["typo", "fps", "type", "path", "port", "enabled", "threads"]))] = draw(VALUES)
    return data


@st.composite
def mutated_configs(draw: Any) -> bytes:
    data = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from(SEEDS))))  # a deep copy
    for _ in range(draw(st.integers(1, 4))):
        data = _mutate(data, draw)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


@st.composite
def mutated_bytes(draw: Any) -> bytes:
    text = bytearray(draw(st.sampled_from(SEED_TEXTS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if draw(st.booleans()):
            text[at : at + len(chunk)] = chunk
        else:
            text[at:at] = chunk
    return bytes(text)


def _cheap_to_run(path: Path) -> bool:
    """A synthetic source that delivers frames quickly, and nothing that opens sockets."""
    try:
        cfg = load_config(path)
    except ConfigError:
        return False
    src = cfg.source
    fast = src.type == "synthetic" and (src.fps == 0 or src.fps >= 5) and src.width * src.height <= 640 * 480
    quiet = all(s.type in ("jsonl", "console") for s in cfg.sinks) and not cfg.http.enabled and not cfg.update.enabled
    return fast and quiet and cfg.pipeline.frame_timeout_s <= 5


def _agent(*argv: str) -> tuple[int, str]:
    """``edge-agent ARGV`` in this process: its exit code and everything it printed; an exception fails the test."""
    unraisable: list[str] = []
    out = io.StringIO()
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(list(argv))
    finally:
        sys.unraisablehook = previous_hook
    assert not unraisable, f"exceptions ignored while running {argv}: {unraisable}"
    return code, out.getvalue()


def _check_then_run(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(raw)
        code, printed = _agent("check", "-c", str(path))
        assert code in ALLOWED_EXITS, f"check exited {code} on:\n{raw!r}\n{printed}"
        assert "Traceback" not in printed
        if code == 0 and _cheap_to_run(path):
            code, printed = _agent("run", "-c", str(path), "--frames", "2", "--duration", "5")
            assert code == 0, f"check accepted but run exited {code} on:\n{raw!r}\n{printed}"


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # run writes status.json into the state dir; keep it off the developer's home. Env overrides the file's value.
    monkeypatch.setenv("EDGE_AGENT_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    for name in ("EDGE_AGENT_CONFIG", "CONFIGURATION_DIRECTORY", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)


def test_the_seed_configs_are_valid() -> None:
    assert len(SEEDS) >= 3, "the README's examples and the systemd template are the fuzzer's seeds"
    for raw in SEED_TEXTS:
        _check_then_run(raw)


@_FUZZ
@given(raw=st.one_of(st.binary(max_size=200), mutated_bytes()))
def test_check_on_arbitrary_bytes(raw: bytes) -> None:
    _check_then_run(raw)


@_FUZZ
@given(raw=mutated_configs())
def test_check_on_mutated_configs(raw: bytes) -> None:
    _check_then_run(raw)


ENV_FIELDS = [
    "MODEL__THREADS",
    "MODEL__BACKEND",
    "MODEL",
    "SOURCE__FPS",
    "SOURCE",
    "SINKS",
    "HTTP__PORT",
    "LOG__LEVEL",
    "DEVICE_ID",
]


@_FUZZ
@given(field=st.sampled_from(ENV_FIELDS), value=st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=30))
def test_check_with_arbitrary_environment_overrides(field: str, value: str) -> None:
    name = f"EDGE_AGENT_{field}"
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as env:
        env.setenv(name, value)
        path = Path(tmp) / "config.yaml"
        path.write_bytes(SEED_TEXTS[0])
        code, printed = _agent("check", "-c", str(path))
    assert code in ALLOWED_EXITS and "Traceback" not in printed, printed
    if code == 2:
        assert name in printed, f"the error names the variable that caused it:\n{printed}"
