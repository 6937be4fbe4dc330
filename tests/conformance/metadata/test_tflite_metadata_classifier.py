"""Conformance: a TFLite classifier carrying TFLite Metadata, loaded bare, answers as the Task Library does.

The metadata (labels file, normalization mean/std 127.5) is written by tflite-support's own
``metadata_writers.image_classifier``; the reference is tflite-support's Task Library ``ImageClassifier``, which
reads that metadata itself (labels, normalization for the float input, raw pixels for the uint8 one). The agent
gets nothing but the model file: no manifest, no config. Same top-5 and scores within 0.01 (the issue's bounds).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.detector import load_detector
from tests.conformance.metadata.fixture import KINDS, classifier_fixture, reference
from tests.conformance.refs import assert_topk_match

pytestmark = pytest.mark.slow


def _bare_copy(kind: str, tmp_path: Path) -> Path:
    """The model alone in a folder: no sidecar manifest can be found beside it."""
    model = tmp_path / f"{kind}_metadata.tflite"
    shutil.copyfile(classifier_fixture() / model.name, model)
    return model


def _compare(kind: str, folder: str, tmp_path: Path) -> None:
    """The bare-loaded model's top-5 on every image of ``folder`` against the Task Library's, labels included."""
    expected = reference()["models"][kind][folder]
    # nothing but the file: a Task-Library-style classifier reports its top-5 unfiltered, as the reference does
    detector = load_detector(_bare_copy(kind, tmp_path))
    try:
        for name, answer in sorted(expected.items()):
            image = cv2.imread(str(classifier_fixture() / folder / name), cv2.IMREAD_COLOR)
            results = detector.detect(image)
            assert_topk_match([(d.class_id, d.score) for d in results], answer["top5"], f"{kind} {name}")
            # labels come from the file's metadata: each class carries the reference's own name for it
            theirs = {c: label for (c, _), label in zip(answer["top5"], answer["labels"], strict=True)}
            ours = {d.class_id: d.label for d in results if d.class_id in theirs}
            assert ours == {c: theirs[c] for c in ours}, f"{kind} {name}: labels {ours} vs the Task Library's {theirs}"
    finally:
        detector.close()


@pytest.mark.parametrize("kind", KINDS)
def test_bare_load_matches_task_library(kind: str, tmp_path: Path) -> None:
    """Images at the model's input size: no resampling, so every other step of the preprocessing is compared."""
    _compare(kind, "images", tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_resized_frames_match_task_library(kind: str, tmp_path: Path) -> None:
    """Frames resized on the way in: the agent resizes with libyuv's bilinear arithmetic, as the Task Library does."""
    _compare(kind, "resized", tmp_path)


WRONG_INPUTS = {
    "pixels / 255 (metadata normalization ignored)": lambda rgb: rgb.astype(np.float32) / 255.0,
    "BGR order": lambda rgb: (rgb[..., ::-1].astype(np.float32) - 127.5) / 127.5,
}


@pytest.mark.parametrize("wrong", sorted(WRONG_INPUTS))
def test_case_catches_wrong_preprocessing(wrong: str) -> None:
    """The comparison can fail: LiteRT fed a preprocessing the metadata does not declare misses most reference answers."""
    from ai_edge_litert.interpreter import Interpreter

    expected = reference()["models"]["float"]["images"]
    interpreter = Interpreter(str(classifier_fixture() / "float_metadata.tflite"), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    mismatches = 0
    for name, answer in sorted(expected.items()):
        rgb = cv2.cvtColor(cv2.imread(str(classifier_fixture() / "images" / name)), cv2.COLOR_BGR2RGB)
        interpreter.set_tensor(inp["index"], WRONG_INPUTS[wrong](rgb)[None])
        interpreter.invoke()
        scores = interpreter.get_tensor(out["index"])[0]
        top = np.argsort(-scores)[:5]
        try:
            assert_topk_match([(int(c), float(scores[c])) for c in top], answer["top5"], name)
        except AssertionError:
            mismatches += 1
    assert mismatches * 2 > len(expected), f"{wrong}: only {mismatches} of {len(expected)} images disagree with the reference"
