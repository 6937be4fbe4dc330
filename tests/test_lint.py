"""The code stays ruff-clean and mypy-clean (the style the README promises)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff() -> None:
    cmd = [sys.executable, "-m", "ruff", "check", "agent", "tests", "scripts"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_on_agent() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "agent"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
