"""Shared machinery of the conformance suite: reference venvs, cached fixtures, and the comparison rules.

Each model family's reference toolchain (Ultralytics, MediaPipe, tflite-support, ...) lives in a venv of
its own under ``~/.cache/edge-agent/venv-<name>``, built by ``scripts/test.sh`` from
``scripts/envs/<name>.txt``; it never enters the device install. A *builder* script runs in that venv,
writes the model files and the reference implementation's own answers (``reference.json``) into a
fixture folder, cached under ``~/.cache/edge-agent/fixtures/<name>-<key>`` and keyed by the builder's
source, its inputs and the venv's package set. The tests then run the agent (the light device install,
this process) on the same images and compare, box for box, with :func:`assert_detections_match`.

reference.json layout (frame pixel coordinates)::

    {"threshold": 0.25,
     "images": {"scene_00.jpg": {"detections": [{"box": [x1, y1, x2, y2], "class_id": 0, "score": 0.91}],
                                 "top5": [[class_id, score], ...]}}}
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGE_AGENT_CONVERT_CACHE", Path.home() / ".cache" / "edge-agent"))
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": "", "HF_HUB_OFFLINE": "1",
           "YOLO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

# Bounds of the "Real models in" issue; a preprocessing difference must not be absorbed by loosening them.
BOX_IOU = 0.99
SCORE_TOL = 0.01
THRESHOLD_BAND = 0.02
DEGENERATE_BOX_TOL = 0.05  # pixels: a zero-area box has no IoU, so its corners must agree this closely


def ref_python(name: str) -> str:
    """The interpreter of reference venv ``name`` (``EDGE_AGENT_ENV_<NAME>`` overrides); skips when absent.

    Under CI the venv must exist (scripts/test.sh builds it): a missing one fails instead of skipping.
    """
    override = os.environ.get(f"EDGE_AGENT_ENV_{name.upper()}")
    path = Path(override) if override else CACHE / f"venv-{name}" / "bin" / "python"
    if not path.is_file():
        msg = f"reference venv {name!r} is missing ({path}); scripts/test.sh builds it from scripts/envs/{name}.txt"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return str(path)


@functools.cache
def _venv_key(python: str) -> str:
    frozen = subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True).stdout
    # Not edge-agent itself: the converter venv's copy is a wheel whose hash changes with every code edit, while
    # builders import the checkout (PYTHONPATH) and name the files they depend on in ``inputs``.
    packages = [line for line in frozen.splitlines() if not line.lower().startswith(("edge-agent", "edge_agent"))]
    return hashlib.sha256("\n".join(packages).encode()).hexdigest()


def _files_key(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path.name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_fixture(name: str, python: str, builder: Path, *args: str, inputs: Sequence[Path] = (),
                  timeout: float = 3000) -> Path:
    """Run ``builder --out DIR *args`` in ``python`` (offline, from the repo root) once per key; return DIR.

    The key covers the builder, every file in ``inputs`` (folders: their files) and the venv's packages,
    so a changed toolchain or builder rebuilds; an unchanged one reuses the cached folder.
    """
    files = [builder]
    for item in inputs:
        files.extend(sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item])
    key = hashlib.sha256((_files_key(files) + _venv_key(python) + " ".join(args)).encode()).hexdigest()[:16]
    root = CACHE / "fixtures"
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"{name}-{key}"
    # one builder per fixture at a time, across test processes (a second waits, then reuses the result)
    with (root / f".{name}-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / ".complete").is_file():
            _build(out, python, builder, args, timeout)
    os.utime(out)  # last use: stale siblings are pruned by age, not by key, so two live variants never thrash
    _prune(root, name)
    return out


def _build(out: Path, python: str, builder: Path, args: Sequence[str], timeout: float) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([python, str(builder), "--out", str(out), *args], cwd=out, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"fixture builder {builder.name} failed (exit {proc.returncode})\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}")
    (out / ".complete").write_text(proc.stdout[-2000:])


STALE_AFTER_S = 3 * 24 * 3600


def _prune(root: Path, name: str) -> None:
    """Drop builds of ``name`` unused for STALE_AFTER_S (older keys of a changed builder or toolchain)."""
    now = time.time()
    for old in root.glob(f"{name}-*"):
        suffix = old.name[len(name) + 1 :]
        if len(suffix) == 16 and old.is_dir() and now - old.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(old, ignore_errors=True)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    if min(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]) <= 0:
        # IoU is undefined for a flat or inverted box (clipped onto a frame edge, or drawn so by an untrained head):
        # it matches only the same box, corner for corner
        return 1.0 if max(abs(x - y) for x, y in zip(a, b, strict=True)) <= DEGENERATE_BOX_TOL else 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _as_row(det: Any) -> dict[str, Any]:
    """An agent ``Detection`` or a reference dict -> ``{"box", "class_id", "score"}``."""
    if isinstance(det, dict):
        return det
    box = det.box
    return {"box": [box.x1, box.y1, box.x2, box.y2], "class_id": det.class_id, "score": det.score}


def assert_detections_match(agent: Sequence[Any], reference: Sequence[dict[str, Any]], threshold: float, where: str,
                            *, box_iou: float = BOX_IOU, score_tol: float = SCORE_TOL) -> int:
    """Every box on either side has a partner (IoU >= box_iou, same class, score within score_tol).

    Boxes scoring within THRESHOLD_BAND of the threshold may appear on one side only. Greedy matching
    by score, best IoU first. Returns the number of matched pairs.
    """
    ours = sorted((_as_row(d) for d in agent), key=lambda d: -d["score"])
    theirs = sorted(reference, key=lambda d: -d["score"])
    used: set[int] = set()
    problems: list[str] = []
    matched = 0
    for mine in ours:
        best, best_iou = -1, 0.0
        for j, ref in enumerate(theirs):
            if j in used or ref["class_id"] != mine["class_id"]:
                continue
            overlap = iou(mine["box"], ref["box"])
            if overlap > best_iou:
                best, best_iou = j, overlap
        if best >= 0 and best_iou >= box_iou and abs(theirs[best]["score"] - mine["score"]) <= score_tol:
            used.add(best)
            matched += 1
        elif abs(mine["score"] - threshold) > THRESHOLD_BAND:
            near = f"best same-class IoU {best_iou:.4f}" + (f", ref score {theirs[best]['score']:.4f}" if best >= 0 else "")
            problems.append(f"agent box {np.round(mine['box'], 1).tolist()} class {mine['class_id']} "
                            f"score {mine['score']:.4f} has no reference partner ({near})")
    for j, ref in enumerate(theirs):
        if j not in used and abs(ref["score"] - threshold) > THRESHOLD_BAND:
            problems.append(f"reference box {np.round(ref['box'], 1).tolist()} class {ref['class_id']} "
                            f"score {ref['score']:.4f} is missing from the agent's result")
    assert not problems, f"{where}: {len(problems)} mismatch(es) ({matched} matched):\n  " + "\n  ".join(problems)
    return matched


def assert_topk_match(agent: Sequence[tuple[int, float]], reference: Sequence[tuple[int, float]], where: str,
                      *, k: int = 5, score_tol: float = SCORE_TOL) -> None:
    """Same top-k classes in the same order (ties within score_tol may swap) and scores within score_tol."""
    ours, theirs = list(agent)[:k], [tuple(r) for r in reference][:k]
    assert len(ours) == len(theirs), f"{where}: agent gave {len(ours)} classes, reference {len(theirs)}"
    assert {c for c, _ in ours} == {int(c) for c, _ in theirs} or all(
        a[0] == b[0] or abs(a[1] - b[1]) <= score_tol for a, b in zip(ours, theirs, strict=True)
    ), f"{where}: top-{k} differ: agent {ours} vs reference {theirs}"
    for (c, s), (rc, rs) in zip(ours, theirs, strict=True):
        if c == int(rc):
            assert abs(s - rs) <= score_tol, f"{where}: class {c} score {s:.4f} vs reference {rs:.4f}"
    ref_scores = dict((int(c), s) for c, s in theirs)
    for c, s in ours:
        if c in ref_scores:
            assert abs(s - ref_scores[c]) <= score_tol, f"{where}: class {c} score {s:.4f} vs reference {ref_scores[c]:.4f}"
