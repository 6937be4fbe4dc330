"""The bundled demo model on real images says, once, what it knows and how to run a real model.

It was trained on the synthetic source's shapes only: on a photo it still reports confident
"circles" and "squares". ``detect`` and ``run`` on a non-synthetic source must say so once;
the synthetic demo stays quiet, and a model the user points at is never called a demo.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.demo import demo_model_path

NOTICE = "the bundled demo model only knows 4 synthetic shapes"


def _photos(folder: Path, count: int = 3) -> list[Path]:
    """Photo-like frames (smooth gradients with blobs and noise), nothing like the synthetic scenes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        y, x = np.mgrid[0:360, 0:480].astype(np.float32)
        image = np.stack([x / 480 * 255, y / 360 * 255, (x + y) / 840 * 255], axis=-1)
        image = cv2.GaussianBlur(image + rng.normal(0, 25, image.shape).astype(np.float32), (0, 0), 3)
        paths.append(folder / f"photo_{i}.jpg")
        cv2.imwrite(str(paths[-1]), np.clip(image, 0, 255).astype(np.uint8))
    return paths


def _agent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_detect_with_the_demo_model_says_so_once(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    proc = _agent("detect", *map(str, photos), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(NOTICE) == 1, proc.stderr
    assert "circle, square, triangle, cross" in proc.stderr and "model.path" in proc.stderr
    assert len(proc.stdout.splitlines()) == len(photos)  # stdout keeps one JSON result per image, nothing else


def test_a_model_the_user_points_at_is_not_called_a_demo(tmp_path: Path) -> None:
    own = tmp_path / "my-model"
    shutil.copytree(demo_model_path("tflite-int8"), own)  # the same bytes, but the user's own copy
    proc = _agent("detect", "--model", str(own), *map(str, _photos(tmp_path / "photos", 1)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert NOTICE not in proc.stderr


@pytest.mark.parametrize(("source", "told"), [("images", True), ("synthetic", False)])
def test_run_says_so_once_on_a_real_source(tmp_path: Path, source: str, told: bool) -> None:
    _photos(tmp_path / "photos")
    body = f"  type: images\n  path: {tmp_path / 'photos'}\n" if source == "images" else "  type: synthetic\n  fps: 0\n"
    config = tmp_path / "config.yaml"
    config.write_text(f"source:\n{body}sinks:\n  - type: jsonl\n    path: {tmp_path / 'out.jsonl'}\n")
    proc = _agent("run", "-c", str(config), "--frames", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(NOTICE) == (1 if told else 0), proc.stderr
