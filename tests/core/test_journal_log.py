"""journald priority prefixes: ``<N>`` on every line when stderr is the stream ``JOURNAL_STREAM`` names, else plain lines."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.journal_log import JournalFormatter, sd_priority, stream_is_journal

REPO = Path(__file__).resolve().parents[2]

# the agent's own logging setup (agent/cli.py), in a fresh process whose stderr is a file
SCRIPT = """
import logging
from agent.cli import _setup_logging
_setup_logging("DEBUG", "auto")
log = logging.getLogger("agent.test")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e"); log.critical("c")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("failed")
"""


def _run(tmp_path: Path, journal_stream: str | None) -> list[str]:
    err = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with err.open("wb") as fh:
        if journal_stream == "this":
            st = os.fstat(fh.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, stderr=fh, check=True, timeout=60)
    return err.read_text().splitlines()


def test_prefixes_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    lines = _run(tmp_path, "this")
    assert lines[:5] == [
        "<7>DEBUG agent.test: d",
        "<6>INFO agent.test: i",
        "<4>WARNING agent.test: w",
        "<3>ERROR agent.test: e",
        "<2>CRITICAL agent.test: c",
    ]
    tb = lines[5:]
    assert tb[0] == "<3>ERROR agent.test: failed" and len(tb) >= 4
    assert all(line.startswith("<3>") for line in tb), "a traceback's every line keeps the record's priority"
    assert tb[-1] == "<3>ValueError: boom"


@pytest.mark.parametrize("announced", [None, "1:2", "garbage"])
def test_plain_lines_otherwise(tmp_path: Path, announced: str | None) -> None:
    """No JOURNAL_STREAM, or one naming another stream (a child whose stderr was redirected): timestamps, no prefix."""
    lines = _run(tmp_path, announced)
    assert lines and not any(line.startswith("<") for line in lines)
    assert lines[2].endswith(" WARNING agent.test: w") and lines[2][:4].isdigit(), lines[2]


def test_levels_map_to_syslog_priorities() -> None:
    assert [sd_priority(n) for n in (5, 10, 15, 20, 25, 30, 40, 50, 60)] == [7, 7, 7, 6, 6, 4, 3, 2, 2]
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "two\nlines", None, None)
    assert JournalFormatter().format(rec) == "<4>WARNING x: two\n<4>lines"


def test_stream_without_a_descriptor_is_not_the_journal() -> None:
    import io

    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # type: ignore[arg-type]


def test_fatal_errors_are_err_priority_under_the_journal(tmp_path: Path) -> None:
    """`run`/`check` refusing a config prints its reason as an error line, which `journalctl -p warning` shows."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {type: synthetic, fps: -5}\n")
    err = tmp_path / "stderr.txt"
    with err.open("wb") as fh:
        st = os.fstat(fh.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.run([sys.executable, "-m", "agent", "check", "-c", str(bad)], cwd=REPO, env=env, stderr=fh, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in err.read_text().splitlines() if line.strip()]
    assert lines and lines[0].startswith("<3>config error: ") and "fps" in "\n".join(lines), lines
    assert all(line.startswith("<3>") for line in lines), "every line carries the priority"
