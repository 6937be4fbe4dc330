"""``edge-agent run | head``: when the reader of stdout exits, the agent ends quietly (exit 0, one info line).

Before, the jsonl sink's BrokenPipeError was logged as an error on every frame until the run ended.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_run_ends_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("source:\n  type: synthetic\n  fps: 0\nsinks:\n  - type: jsonl\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "-c", str(config), "--frames", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = [proc.stdout.readline() for _ in range(3)]  # what `head -3` reads, then it exits
    assert all(line.startswith("{") for line in lines), lines
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"still running 30 s after its reader left:\n{err[-2000:]}") from None
    assert proc.returncode == 0, err
    assert err.count("closed by its reader") == 1, err
    for noise in ("failed on frame", "Traceback", "Exception ignored", "BrokenPipeError"):
        assert noise not in err, err
