"""Every command line keeps one set of conventions: --json is a flag, --output FILE writes, --version answers, help everywhere.

The parser trees are walked, so a command added later is checked without editing this file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent import __version__
from agent.cli import build_parser as agent_parser
from agent.cli_conventions import add_json_options, arguments_without_help, run_with_json_output, walk_parsers
from agent.ota.fleet_cli import build_parser as fleet_parser
from agent.ota.registry_cli import build_parser as registry_parser
from converters.cli import convert_parser, quantize_parser

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "edge-agent": agent_parser,
    "edge-registry": registry_parser,
    "edge-fleet": fleet_parser,
    "convert-to-tflite": convert_parser,
    "quantize-onnx": quantize_parser,
}


@pytest.mark.parametrize("tool", PARSERS)
def test_every_argument_has_help(tool: str) -> None:
    assert arguments_without_help(PARSERS[tool]()) == []


@pytest.mark.parametrize("tool", PARSERS)
def test_json_is_a_flag_and_output_takes_a_file(tool: str) -> None:
    for name, parser in walk_parsers(PARSERS[tool]()):
        for action in parser._actions:
            if "--json" in action.option_strings:
                assert action.nargs == 0, f"{name}: --json takes no value (print JSON on stdout); write a file with --output"
            if "--output" in action.option_strings:
                assert action.nargs is None and action.metavar == "FILE", f"{name}: --output FILE"


@pytest.mark.parametrize("tool", PARSERS)
def test_every_command_answers_version(tool: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = PARSERS[tool]()
    commands = [name for name, _ in walk_parsers(root)]
    for name in commands:
        argv = [*name.split()[1:], "--version"]
        with pytest.raises(SystemExit) as done:
            PARSERS[tool]().parse_args(argv)
        assert done.value.code == 0, name
        assert capsys.readouterr().out.strip() == f"{tool} {__version__}", name


def _fake_bench(table: str, result: dict[str, int]) -> Callable[[Path | None], int]:
    def run(path: Path | None) -> int:
        print(table)
        if path is not None:
            path.write_text(json.dumps(result))
        return 0

    return run


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_json_options(parser, "the rows")
    return parser.parse_args(list(argv))


def test_json_prints_json_alone_on_stdout(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_with_json_output(_args("--json"), _fake_bench("a table", {"fps": 30})) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"fps": 30} and "a table" in err
    file = tmp_path / "rows.json"
    assert run_with_json_output(_args("--output", str(file)), _fake_bench("a table", {"fps": 31})) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == "a table" and json.loads(file.read_text()) == {"fps": 31}
    assert run_with_json_output(_args("--json", "-o", str(file)), _fake_bench("a table", {"fps": 32})) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == json.loads(file.read_text()) == {"fps": 32}


def test_subcommand_version_in_a_real_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "models", "inspect", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"edge-agent {__version__}", proc.stderr


@pytest.mark.parametrize(
    ("tool", "argv"),
    [("convert-to-tflite", ["model.onnx"]), ("quantize-onnx", ["model.onnx"]), ("edge-registry", ["publish", "model.tflite"])],
)
def test_a_value_after_version_is_refused_naming_model_version(
    tool: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--version 2.0` (the old spelling of the model version) must fail loudly, not print a version and exit 0."""
    with pytest.raises(SystemExit) as done:
        PARSERS[tool]().parse_args([*argv, "--version", "2.0"])
    assert done.value.code == 2
    assert "--model-version 2.0" in capsys.readouterr().err


def test_model_version_is_the_manifest_version() -> None:
    assert PARSERS["convert-to-tflite"]().parse_args(["m.onnx", "--model-version", "3.1"]).version == "3.1"
    assert PARSERS["edge-registry"]().parse_args(["publish", "m.tflite", "--model-version", "v2"]).version == "v2"
