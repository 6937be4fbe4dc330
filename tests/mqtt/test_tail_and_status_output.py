"""``edge-agent tail --count N`` prints exactly N messages; ``edge-agent status`` shows thresholds in words."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from agent.status_file import render

from .conftest import REPO, Broker, RunningPipeline, make_sink


def test_tail_count_is_exact(broker: Broker, tmp_path: Path) -> None:
    # at 60 fps messages keep arriving while tail disconnects: the ones already in flight were printed too (3 -> 5)
    sink = make_sink(tmp_path / "state", broker.port, "tc")
    run = RunningPipeline([sink], fps=60)
    try:
        argv = ["tail", "--port", str(broker.port), "--device", "tc", "--count", "3", "--duration", "20", "--json"]
        proc = subprocess.run([sys.executable, "-m", "agent", *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        run.stop()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    assert all("topic" in json.loads(line) for line in lines)


def test_status_shows_thresholds_in_words() -> None:
    doc = {
        "alive": True,
        "age_s": 0.5,
        "pid": 1,
        "device_id": "pi",
        "status": {
            "state": "running",
            "model": {"name": "demo", "version": "1.0.0"},
            "thresholds": {"score": 0.5, "iou": 0.45, "max_detections": 100},
        },
    }
    out = io.StringIO()
    render(doc, Console(file=out, width=200))
    text = out.getvalue()
    assert "score ≥ 0.5 · NMS IoU 0.45 · at most 100 per frame" in text, text
    assert "{" not in text  # no Python dict
