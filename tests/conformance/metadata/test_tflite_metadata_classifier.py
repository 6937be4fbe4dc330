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
from agent.manifest import Thresholds
from tests.conformance.metadata.fixture import KINDS, classifier_fixture, reference
from tests.conformance.refs import assert_topk_match

pytestmark = pytest.mark.slow


def _bare_copy(kind: str, tmp_path: Path) -> Path:
    """The model alone in a folder: no sidecar manifest can be found beside it."""
    model = tmp_path / f"{kind}_metadata.tflite"
    shutil.copyfile(classifier_fixture() / model.name, model)
    return model


@pytest.mark.parametrize("kind", KINDS)
def test_bare_load_matches_task_library(kind: str, tmp_path: Path) -> None:
    expected = reference()["models"][kind]["images"]
    # no score floor: the reference lists its top-5 whatever their scores
    detector = load_detector(_bare_copy(kind, tmp_path), thresholds=Thresholds(score=0.0))
    try:
        for name, answer in sorted(expected.items()):
            image = cv2.imread(str(classifier_fixture() / "images" / name), cv2.IMREAD_COLOR)
            results = detector.detect(image)
            ours = [(d.class_id, d.score) for d in results]
            assert_topk_match(ours, answer["top5"], f"{kind} {name}")
            top = answer["top5"][0]
            # the labels come from the file's metadata: the best class carries the reference's own name for it
            assert results[0].class_id != top[0] or results[0].label == answer["labels"][0], (
                f"{kind} {name}: class {top[0]} is {results[0].label!r}, the Task Library calls it {answer['labels'][0]!r}"
            )
    finally:
        detector.close()


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
