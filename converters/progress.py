"""One progress-bar style for every long converter step."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=False)


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
