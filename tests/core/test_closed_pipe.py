"""``edge-agent run | head``: when the reader of stdout exits, the agent ends quietly (exit 0, one info line).

Before, the jsonl sink's BrokenPipeError was logged as an error on every frame until the run ended.
"""

from __future__ import annotations

import subprocess
import sys
import time
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
    start = time.monotonic()
    proc.stdout.close()
    err = proc.stderr.read()
    code = proc.wait(timeout=60)
    assert code == 0, err
    assert time.monotonic() - start < 30, "it stopped instead of running its 100000 frames"
    assert err.count("closed by its reader") == 1, err
    for noise in ("failed on frame", "Traceback", "Exception ignored", "BrokenPipeError"):
        assert noise not in err, err
