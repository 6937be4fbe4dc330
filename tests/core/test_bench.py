"""``edge-agent bench`` runs end to end and writes every documented key (its numbers are not judged here:
a benchmark is a command, not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.demo import VARIANTS

KEYS = {"backend", "model", "raw_fps", "pipeline_fps", "naive_fps", "overhead_ms_p50", "alloc_bytes_per_frame",
        "pipeline_vs_raw", "pipeline_vs_raw_range", "pipeline_vs_naive", "frames", "rounds"}


@pytest.mark.slow
def test_bench_writes_a_row_per_variant(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "bench", "--frames", "40", "--rounds", "2", "--min-seconds", "0.05",
         "--threads", "1", "--json", "--output", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert json.loads(proc.stdout) == data  # --json: stdout carries the JSON alone (the table went to stderr)
    assert data["threads"] == 1
    assert [r["model"] for r in data["rows"]] == list(VARIANTS)
    for row in data["rows"]:
        assert row.keys() >= KEYS, KEYS - row.keys()
        assert row["raw_fps"] > 0 and row["pipeline_fps"] > 0 and row["naive_fps"] > 0
        assert row["rounds"] == 2 and row["frames"] >= 40
        low, high = row["pipeline_vs_raw_range"]
        assert low <= row["pipeline_vs_raw"] <= high
        # the pipeline never allocates a frame-sized array per frame (640x480x3 = 921,600 bytes)
        assert row["alloc_bytes_per_frame"] < 100_000, row
    assert "pipeline/raw" in proc.stderr and "tflite-int8" in proc.stderr  # the table, beside the JSON
