"""The same format cases through ``edge-agent detect``: no manifest, no config, nothing but ``--model FILE``.

Each case runs the CLI as a user does (``python -m agent detect --model FILE images...``) and compares its
JSON lines with the same reference answers the in-process tests use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import refs
from tests.conformance.formats.conftest import load_reference

pytestmark = pytest.mark.slow


def _detect(model: Path, images: list[Path], tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """source_id -> detections as the CLI prints them (box in frame pixels)."""
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "detect", "--model", str(model), *map(str, images)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(refs.REPO)},
    )
    assert proc.returncode == 0, f"edge-agent detect exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(images), f"{len(results)} results for {len(images)} images:\n{proc.stdout[-2000:]}"
    rows: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        rows[result["source_id"]] = [
            {
                "box": None if d["box"] is None else [d["box"][k] for k in ("x1", "y1", "x2", "y2")],
                "class_id": d["class_id"],
                "score": d["score"],
            }
            for d in result["detections"]
        ]
    return rows


def test_ssd_postprocess_through_detect(ssd_postprocess: Path, tmp_path: Path) -> None:
    reference = load_reference(ssd_postprocess)
    expected = reference["models"]["uint8"]["images"]
    found = _detect(
        ssd_postprocess / "uint8.tflite",
        [ssd_postprocess / "images" / name for name in expected],
        tmp_path,
    )
    for name, answer in expected.items():
        refs.assert_detections_match(found[name], answer["detections"], reference["threshold"], f"detect uint8 {name}")


def test_dynamic_batch_classifier_through_detect(onnx_classifier: Path, tmp_path: Path) -> None:
    expected = load_reference(onnx_classifier)["models"]["unit"]["images"]
    found = _detect(
        onnx_classifier / "unit.onnx",
        [onnx_classifier / "images" / name for name in expected],
        tmp_path,
    )
    for name, answer in expected.items():
        refs.assert_topk_match([(d["class_id"], d["score"]) for d in found[name]], answer["top5"], f"detect unit.onnx {name}")


@pytest.mark.parametrize(
    ("name", "model"),
    [("short_range", "face_detection_short_range.tflite"), ("full_range", "face_detection_full_range_sparse.tflite")],
)
def test_mediapipe_face_through_detect(mediapipe_faces: Path, tmp_path: Path, name: str, model: str) -> None:
    reference = load_reference(mediapipe_faces, f"reference_{name}.json")
    expected = reference["images"]
    found = _detect(
        mediapipe_faces / model,
        [mediapipe_faces / "images" / name for name in expected],
        tmp_path,
    )
    problems = []
    for image, answer in expected.items():
        try:
            refs.assert_detections_match(found[image], answer["detections"], reference["threshold"], f"detect {name} {image}")
        except AssertionError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)
