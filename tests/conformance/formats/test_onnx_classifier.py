"""ONNX classifiers with a dynamic batch axis (torch.onnx.export, dynamic_axes), against onnxruntime run directly.

Reference (build_onnx_classifier.py): onnxruntime on the same images with the documented preprocessing, RGB,
frame stretched to 224x224 (bilinear), /255, and for ``imagenet.onnx`` the ImageNet mean/std; top-5 classes and
probabilities. ``unit.onnx`` takes 0..1 input and loads bare. ``imagenet.onnx`` cannot say its mean/std (ONNX
has no standard field for it), so the user supplies them in model.json; loaded bare, it must answer differently
(the control: this comparison sees a normalization difference).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.detector import Detector, load_detector
from agent.manifest import Thresholds
from tests.conformance import refs
from tests.conformance.formats.conftest import load_reference, read_image

pytestmark = pytest.mark.slow

TOP5 = Thresholds(score=0.0, max_detections=5)  # every class may appear in the top 5, however low its score


def _compare(detector: Detector, folder: Path, expected: dict[str, Any], kind: str) -> list[str]:
    problems = []
    for image, answer in expected["images"].items():
        found = [(d.class_id, d.score) for d in detector.detect(read_image(folder, image))]
        try:
            refs.assert_topk_match(found, answer["top5"], f"{kind} {image}")
        except AssertionError as exc:
            problems.append(str(exc))
    return problems


def test_reference_is_meaningful(onnx_classifier: Path) -> None:
    """The batch axis is symbolic in both files, and the top-5 differ between images (else matching proves little)."""
    reference = load_reference(onnx_classifier)
    for kind, model in reference["models"].items():
        assert isinstance(model["input_shape"][0], str), f"{kind}: batch axis {model['input_shape'][0]!r} is not dynamic"
        orders = {tuple(c for c, _ in answer["top5"]) for answer in model["images"].values()}
        assert len(orders) >= 3, f"{kind}: the images barely differ in their top-5"


@pytest.mark.parametrize("config", ["bare", "top5_thresholds"])
def test_dynamic_batch_classifier_loads_bare(onnx_classifier: Path, config: str) -> None:
    """unit.onnx with no manifest: the agent fixes the batch to 1 and answers as onnxruntime does.

    Truly bare (not even thresholds: a classifier's answer is its top 5, unfiltered), and with the top-5
    thresholds given in the config, which isolates loading and preprocessing from the threshold defaults.
    """
    reference = load_reference(onnx_classifier)
    detector = load_detector(onnx_classifier / "unit.onnx", thresholds=TOP5 if config == "top5_thresholds" else None)
    try:
        assert detector.manifest.task.value == "classify", detector.manifest.decoder
        assert len(detector.labels) == len(reference["labels"])
        problems = _compare(detector, onnx_classifier, reference["models"]["unit"], "unit.onnx (bare)")
    finally:
        detector.close()
    assert not problems, "\n".join(problems)


def _user_manifest(reference: dict[str, Any]) -> dict[str, Any]:
    """What a user writes for imagenet.onnx: the normalization (and resize) the file cannot carry."""
    return {
        "name": "imagenet-classifier",
        "version": "1",
        "task": "classify",
        "input": {
            "width": 224,
            "height": 224,
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "normalization": {"mean": [m * 255 for m in reference["mean"]], "std": [s * 255 for s in reference["std"]]},
            "resize": "stretch",
        },
        "labels": reference["labels"],
        "decoder": {"type": "classifier"},
    }


def test_imagenet_normalization_from_user_manifest(onnx_classifier: Path, tmp_path: Path) -> None:
    reference = load_reference(onnx_classifier)
    model = tmp_path / "imagenet.onnx"
    shutil.copyfile(onnx_classifier / "imagenet.onnx", model)
    (tmp_path / "model.json").write_text(json.dumps(_user_manifest(reference)))
    detector = load_detector(model, thresholds=TOP5)
    try:
        problems = _compare(detector, onnx_classifier, reference["models"]["imagenet"], "imagenet.onnx + model.json")
    finally:
        detector.close()
    assert not problems, "\n".join(problems)


def test_imagenet_bare_differs(onnx_classifier: Path) -> None:
    """Control: without the user's mean/std the answer changes, so the comparison does see preprocessing."""
    reference = load_reference(onnx_classifier)
    detector = load_detector(onnx_classifier / "imagenet.onnx", thresholds=TOP5)
    try:
        problems = _compare(detector, onnx_classifier, reference["models"]["imagenet"], "imagenet.onnx (bare)")
    finally:
        detector.close()
    assert problems, "imagenet.onnx loaded bare matched the reference that uses ImageNet mean/std"
