"""Conventions every command line of the project keeps, in one place.

- ``--json`` is a flag: the command prints JSON on stdout (its table and progress go to stderr);
  ``-o/--output FILE`` writes the same JSON to a file (beside the table, or beside --json).
- ``--version`` answers on every command and subcommand (``edge-agent run --version``).
- Every argument has help text (tests/core/test_cli_conventions.py walks each parser tree).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def add_json_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json`` (print ``what`` as JSON on stdout) and ``-o/--output FILE`` (write it to FILE)."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout (the table goes to stderr)")
    parser.add_argument("-o", "--output", metavar="FILE", help=f"write {what} as JSON to FILE")


def run_with_json_output(args: argparse.Namespace, run: Callable[[Path | None], int]) -> int:
    """Run a command that writes its JSON to a path (or None), honouring ``--json`` and ``--output``.

    With ``--json`` the command's own printing moves to stderr so stdout carries the JSON alone
    (``edge-agent bench --json | jq``).
    """
    output = Path(args.output) if args.output else None
    if not args.json:
        return run(output)
    with tempfile.TemporaryDirectory(prefix="edge-agent-json-") as tmp:
        path = output or Path(tmp) / "result.json"
        with contextlib.redirect_stdout(sys.stderr):
            code = run(path)
        if path.is_file():
            text = path.read_text()
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
    return code


def walk_parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser in the tree with its command line (``edge-agent models inspect``), root first."""
    stack = [(parser.prog, parser)]
    while stack:
        name, current = stack.pop(0)
        yield name, current
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend((sub.prog, sub) for sub in action.choices.values())


class _ToolVersion(argparse.Action):
    """``--version`` prints the tool's version and exits; given a value, it is refused naming ``--model-version``.

    The converters and ``edge-registry publish`` once took ``--version V`` for the model's version: a script that
    still passes one must fail loudly, not exit 0 having printed a version and done nothing.
    """

    def __init__(self, option_strings: list[str], dest: str, version: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs="?",
            metavar="",
            help="print the version and exit",
        )
        self.version = version

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option_string: str | None = None
    ) -> None:
        if values is not None:
            parser.error(
                f"--version takes no value (it prints the tool's version); the model's version is --model-version {values}"
            )
        sys.stdout.write(self.version + "\n")
        parser.exit()


def add_version_everywhere(parser: argparse.ArgumentParser, version: str) -> None:
    """``--version`` on the root and every subcommand (``edge-agent run --version``)."""
    for _, current in walk_parsers(parser):
        if "--version" not in current._option_string_actions:
            current.add_argument("--version", action=_ToolVersion, version=version)


def arguments_without_help(parser: argparse.ArgumentParser) -> list[str]:
    """``prog: --flag`` for each argument in the tree whose help text is missing (the test's list)."""
    missing = []
    for name, current in walk_parsers(parser):
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name}: {choice}" for choice in action.choices if choice not in _helped_choices(action)]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    return missing


def _helped_choices(action: argparse._SubParsersAction) -> set[str]:  # type: ignore[type-arg]
    return {choice.dest for choice in action._choices_actions if choice.help}
