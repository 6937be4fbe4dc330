"""TFLite inputs with a dynamic signature (-1) are resized at load: batch 1, size from model.input_size.

The models are built by TensorFlow's own converter in the convert venv (cached fixture): one with
``shape_signature [-1, -1, -1, 3]``, one with the same weights fixed at 96x128. Run at 128x96,
the dynamic one must answer exactly as its static twin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.backends.base import BackendOptions
from agent.detector import load_detector
from agent.errors import ManifestError
from agent.manifest import Thresholds
from tests.conformance.refs import build_fixture, ref_python

BUILDER = Path(__file__).parent / "builders" / "dynamic_tflite.py"
LOW = Thresholds(score=0.05, iou=0.5, max_detections=50)
pytestmark = pytest.mark.slow  # builds the TFLite pair once with TensorFlow (cached)


@pytest.fixture(scope="module")
def models() -> Path:
    return build_fixture("dynamic-tflite", ref_python("convert"), BUILDER, timeout=900)


def test_dynamic_signature_answers_as_its_static_twin(models: Path) -> None:
    dynamic = load_detector(models / "dynamic.tflite", BackendOptions(threads=1), thresholds=LOW, input_size=(128, 96))
    static = load_detector(models / "static.tflite", BackendOptions(threads=1), thresholds=LOW)
    try:
        assert dynamic.backend.input.shape == (1, 96, 128, 3)
        assert dynamic.backend.outputs[0].shape == (1, 6, 192)  # learnt by the dry run at load
        image = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        ours, twin = dynamic.detect(image), static.detect(image)
        assert ours and [(d.class_id, d.score, d.box) for d in ours] == [(d.class_id, d.score, d.box) for d in twin]
        second = dynamic.contexts(2)[1]  # a forked interpreter is resized the same way
        assert second.input_array().shape == (1, 96, 128, 3)
    finally:
        dynamic.close()
        static.close()


def test_dynamic_signature_without_a_size_says_where_to_set_it(models: Path) -> None:
    with pytest.raises(ManifestError, match=r"dynamic\.tflite.*'images'.*model\.input_size"):
        load_detector(models / "dynamic.tflite", BackendOptions(threads=1))


def test_ultralytics_metadata_json_in_a_tflite_is_not_mistaken_for_our_manifest(models: Path, tmp_path: Path) -> None:
    """Ultralytics appends its own ``metadata.json`` zip member (our embedded manifest's name): read it as metadata."""
    import json
    import shutil
    import zipfile

    model = tmp_path / "yolo.tflite"
    shutil.copyfile(models / "static.tflite", model)
    meta = {"author": "Ultralytics", "task": "detect", "stride": 8, "imgsz": [96, 128], "names": {0: "cat", 1: "dog"}}
    with zipfile.ZipFile(model, "a") as zf:
        zf.writestr("metadata.json", json.dumps(meta))
    detector = load_detector(model, BackendOptions(threads=1))
    try:
        assert detector.manifest_origin == "read from the model (no manifest)"
        assert detector.labels == ("cat", "dog") and "ultralytics" in detector.sources["family"]
        assert detector.manifest.decoder.boxes_normalized  # type: ignore[union-attr]  # Ultralytics TFLite exports
    finally:
        detector.close()


def test_inspect_shows_the_signature_and_runs_at_a_given_size(models: Path) -> None:
    import json
    import subprocess
    import sys

    def inspect(*extra: str) -> tuple[int, dict]:
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "models", "inspect", str(models / "dynamic.tflite"), "--json", *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return proc.returncode, json.loads(proc.stdout)

    code, info = inspect()
    assert code == 3 and info["inputs"][0]["shape"] == [-1, -1, -1, 3] and info["missing"]
    code, info = inspect("--input-size", "128x96")
    assert code == 0 and info["runs_as"]["inputs"][0]["shape"] == [1, 96, 128, 3]
    assert info["runs_as"]["outputs"][0]["shape"] == [1, 6, 192]
