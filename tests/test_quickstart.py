"""The README's quick start, as a new user runs it: a fresh virtual environment, then the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_script_in_a_clean_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "EDGE_AGENT_", "PYTHONPATH"))}
    env["EDGE_AGENT_VENV"] = str(venv)
    env["PYTHON"] = sys.executable
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh"), "--frames", "30"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # no TTY here, so the demo prints JSON lines instead of the live view
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    frames = [r for r in results if "frame_id" in r]
    assert len(frames) == 30
    assert frames[0]["model"]["name"] and any(r["detections"] for r in frames)
    # the device install stays light
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list"], capture_output=True, text=True).stdout.lower()
    for heavy in ("tensorflow", "torch "):
        assert heavy not in listed


@pytest.mark.slow
def test_wheel_ships_the_demo_model(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("edge_agent-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for variant, suffix in (("tflite-int8", "tflite"), ("tflite-fp32", "tflite"), ("onnx-int8", "onnx"), ("onnx-fp32", "onnx")):
        assert f"agent/demo_models/{variant}/model.{suffix}" in names
        assert f"agent/demo_models/{variant}/model.json" in names
    assert any(n.startswith("agent/demo_models/selftest/") for n in names)
