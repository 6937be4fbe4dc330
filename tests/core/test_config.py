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
    assert "model.score_treshold" in fields and "not a known setting here" in fields["model.score_treshold"]
    assert "source.fps" in fields and "got -5" in fields["source.fps"]  # as written: no plugin tag in the path
    assert "sinks[0].flush_every" in fields and "got 'zero'" in fields["sinks[0].flush_every"]
    assert "did you mean 'score_threshold'?" in fields["model.score_treshold"]
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
    assert "source.path: Field required" in proc.stderr  # the images source needs a path; no plugin tag in the path


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


def test_sink_errors_name_the_yaml_path_not_the_plugin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "sinks:\n  - type: jsonl\n  - type: mqtt\n    port: 0\n    tls: {enabled: maybe}\n"))
    fields = dict(info.value.problems)
    assert set(fields) == {"sinks[1].port", "sinks[1].tls.enabled"}, fields
    assert "greater than or equal to 1" in fields["sinks[1].port"] and "got 0" in fields["sinks[1].port"]


def test_a_source_without_type_says_which_types_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "source:\n  fps: 5\n"))
    assert info.value.problems[0][0] == "source.type"
    assert "synthetic" in info.value.problems[0][1] and "opencv" in info.value.problems[0][1]


def test_env_override_errors_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_MODEL__THREADS", "many")
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "model:\n  threads: 2\n"))
    message = str(info.value)
    assert message.startswith("environment overrides"), message  # not an error "in" the file
    assert "model.threads" in message and "EDGE_AGENT_MODEL__THREADS" in message and "'many'" in message
    monkeypatch.delenv("EDGE_AGENT_MODEL__THREADS")
    monkeypatch.setenv("EDGE_AGENT_MODEL", "{threads: 2")  # a section must be JSON: pydantic-settings raised SettingsError
    with pytest.raises(ConfigError, match=r"EDGE_AGENT_MODEL='\{threads: 2' is not valid JSON"):
        load_config(_write(tmp_path, ""))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"model:\n  threads: 2\n  \xff\xfe: 1\n", "byte 22 is not UTF-8"),
        (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
        (b"1: 2\n", "top-level key 1 is not a setting name"),
        (
            b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + b"".join(
                b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n" % ((c, c) + (c - 1,) * 10) for c in b"bcdefg"
            ),
            "more than 100000 values",
        ),
        (b"- a\n- b\n", "the top level must be a mapping"),
    ],
    ids=["not-utf8", "deep", "int-key", "alias-bomb", "list"],
)
def test_malformed_files_are_config_errors(tmp_path: Path, raw: bytes, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_check_refuses_what_run_would_crash_on(tmp_path: Path) -> None:
    # numpy refuses a negative seed when the source opens: `check` passed it and `run` exited 1 (systemd restarted it)
    path = _write(tmp_path, "source:\n  type: synthetic\n  seed: -1\n")
    proc = _cli("check", "-c", str(path))
    assert proc.returncode == 2 and "source.seed" in proc.stderr and "got -1" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "library", ["libnot-installed.so.1", "libc.so.6", "config.yaml"], ids=["missing", "not-a-delegate", "text"]
)
def test_a_delegate_that_is_not_a_delegate_library(tmp_path: Path, library: str) -> None:
    # LiteRT's load_delegate raised AttributeError on a library without the plugin ABI, and printed
    # "Exception ignored in Delegate.__del__" for a missing one
    path = _write(tmp_path, f"model:\n  delegate: {library}\nsource:\n  type: synthetic\n  fps: 0\n")
    check = _cli("check", "-c", str(path), cwd=tmp_path)
    assert check.returncode == 2, check.stderr
    assert "model.delegate" in check.stderr and repr(library) in check.stderr
    run = _cli("run", "-c", str(path), "--frames", "2", cwd=tmp_path)  # run falls back to the CPU: an unplugged Coral
    assert run.returncode == 0, run.stderr
    for proc in (check, run):
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert "running" in run.stderr and "on the CPU" in run.stderr


def test_an_onnx_model_without_onnx_runtime_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the plain install: LiteRT only
    path = _write(tmp_path, "model:\n  variant: onnx-int8\n")
    assert main(["check", "-c", str(path)]) == 2  # a restart cannot install a runtime: no systemd restart loop
    assert "pip install 'edge-agent[onnx]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("http:\n  enabled: true\n  token_file: {tmp}/missing-token\n", "http.token_file"),
        ("http:\n  enabled: true\n  token_file: {tmp}/binary-token\n", "http.token_file"),
        ("sinks:\n  - type: mqtt\n    username: u\n    password_env: EDGE_AGENT_TEST_UNSET_PASSWORD\n", "password_env"),
    ],
    ids=["token-missing", "token-not-utf8", "password-env-unset"],
)
def test_check_refuses_what_run_refuses_at_start(
    tmp_path: Path, text: str, field: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # these passed `check` and stopped `run` with exit 2 (a non-UTF-8 token file: a traceback): check reads them as run does
    monkeypatch.delenv("EDGE_AGENT_TEST_UNSET_PASSWORD", raising=False)
    (tmp_path / "binary-token").write_bytes(b"\xff" * 40)
    from agent.cli import main

    path = _write(tmp_path, text.format(tmp=tmp_path))
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err, err
