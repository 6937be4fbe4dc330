"""Config: defaults run the demo, every error names its field and value, env overrides the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import AgentConfig, config_json_schema, load_config
from agent.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_empty_file_gives_demo_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, ""))
    assert cfg.model.path is None and cfg.source.type == "synthetic"
    assert cfg.model.threads >= 1


def test_every_error_is_reported_with_path_and_value(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
model:
  threads: 0
  backend: tensorflow
  score_treshold: 0.3
source:
  type: synthetic
  fps: -5
sinks:
  - type: jsonl
    flush_every: zero
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    fields = dict(info.value.problems)
    assert "model.threads" in fields and "got 0" in fields["model.threads"]
    assert "model.backend" in fields and "'auto', 'litert' or 'onnxruntime'" in fields["model.backend"]
    assert "model.score_treshold" in fields and "Extra inputs are not permitted" in fields["model.score_treshold"]
    assert any(p.startswith("source.") and "fps" in p for p in fields)
    assert any("flush_every" in p for p in fields)
    assert str(path) in str(info.value)


def test_unknown_source_type_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "source:\n  type: webcam\n"))
    message = str(info.value)
    assert "webcam" in message and "synthetic" in message and "opencv" in message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+, column \d+"):
        load_config(_write(tmp_path, "model:\n  threads: [1,\n"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_MODEL__THREADS", "3")
    monkeypatch.setenv("EDGE_AGENT_DEVICE_ID", "pi-kitchen")
    cfg = load_config(_write(tmp_path, "device_id: from-file\nmodel:\n  threads: 1\n  score_threshold: 0.3\n"))
    assert cfg.model.threads == 3 and cfg.device_id == "pi-kitchen"
    assert cfg.model.score_threshold == 0.3  # untouched keys keep the file's value


def test_schema_documents_every_field() -> None:
    schema = config_json_schema()
    missing = []

    def walk(node: dict, where: str) -> None:
        for name, prop in node.get("properties", {}).items():
            if "description" not in prop:
                missing.append(f"{where}.{name}")
        for key, sub in node.get("$defs", {}).items():
            walk(sub, key)

    walk(schema, "AgentConfig")
    assert not missing, f"fields without a description: {missing}"
    assert AgentConfig.model_fields["source"].description


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_check_exits_2_and_lists_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "model:\n  threads: -1\nsource:\n  type: images\n")
    proc = _cli("check", "-c", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "model.threads" in proc.stderr and "got -1" in proc.stderr
    assert "source.images" in proc.stderr  # the images source needs a path


def test_config_schema_command_prints_json_schema() -> None:
    proc = _cli("config", "schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["title"] == "AgentConfig" and "model" in schema["properties"]


def test_readme_config_reference_is_current() -> None:
    from agent.config_docs import END, START, config_reference

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    current = readme[readme.index(START) + len(START) : readme.index(END)].strip()
    assert current == config_reference().strip(), "README config reference is stale: paste `edge-agent config docs`"
