"""One progress-bar style for every long converter step."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(stream: TextIO | None = None) -> Progress:
    """The converters' bar; ``stream`` pins the output (a bar shown inside :func:`quiet` passes the real stdout)."""
    console = Console(file=stream) if stream is not None else None
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False, console=console
    )


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Hide a toolchain's Python-level chatter; replay it on failure (it explains the error)."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield sink
    except BaseException:
        sys.stderr.write(sink.getvalue())
        raise
