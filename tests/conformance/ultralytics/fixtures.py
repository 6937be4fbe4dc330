"""The Ultralytics fixture folders, for these tests and for anyone else who needs real Ultralytics files.

``format_fixture("yolov8n")`` -> folder with ``<variant>/yolov8n.onnx`` (variants ``onnx``, ``onnx-dynamic``,
``tflite``), ``<variant>/reference.json`` (Ultralytics predict on that file), ``images/`` and ``build.json``
(versions, tensor shapes and metadata, and the error of any variant the exporter could not produce).

``trained_fixture()`` -> the same for the committed trained YOLOv8n (``TRAINED_WEIGHTS``), plus ``heldout/``
(a labelled YOLO split of unseen scenes, ``data.yaml``), ``val.json`` (Ultralytics ``val`` of each file on it)
and ``best.pt`` (a copy of the weights).

``rtdetr_fixture()`` -> RT-DETR-L exported to ONNX (``onnx``, ``onnx-dynamic``) with its predictor's answers.

``yolov5_fixture()`` -> the classic anchor-based YOLOv5n exported and answered by the ``yolov5`` package
(variants ``onnx`` and ``onnx-dynamic``).

The converter tests share these folders: same builder, same arguments, same cache key, nothing built twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2

from agent.detector import load_detector
from agent.manifest import Thresholds
from tests.conformance import refs
from tests.conformance.refs import REPO, build_fixture, ref_python

HERE = Path(__file__).resolve().parent
SCENES = REPO / "agent" / "sources" / "scenes.py"
SHARED_INPUTS = (HERE / "scene_data.py", SCENES)
TRAINED_WEIGHTS = REPO / "tests" / "conformance" / "assets" / "yolov8n_scenes.pt"
FORMAT_IMGSZ = 320  # the converter tests build the same fixtures at this size: one cache entry serves both
# Ultralytics model yamls with Ultralytics' own exporter: anchor-free heads, and the NMS-free end-to-end heads.
FAMILIES = ("yolov8n", "yolo11n", "yolov5nu")
END2END_FAMILIES = ("yolov10n", "yolo26n")
VARIANTS = ("onnx", "onnx-dynamic", "tflite")


def format_fixture(family: str, imgsz: int = FORMAT_IMGSZ) -> Path:
    """Random-weight ``family`` (an Ultralytics yaml stem) exported to every variant, with predict answers."""
    return build_fixture(
        f"ultralytics-{family}",
        ref_python("ultralytics"),
        HERE / "build_formats.py",
        "--model",
        f"{family}.yaml",
        "--imgsz",
        str(imgsz),
        inputs=SHARED_INPUTS,
    )


def trained_fixture() -> Path:
    """The trained YOLOv8n's exports, predict answers on held-out scenes and Ultralytics ``val`` on them."""
    return build_fixture(
        "ultralytics-trained-yolov8n",
        ref_python("ultralytics"),
        HERE / "build_trained.py",
        inputs=(*SHARED_INPUTS, HERE / "build_formats.py", HERE / "score_ultralytics.py", TRAINED_WEIGHTS),
    )


def rtdetr_fixture() -> Path:
    """RT-DETR-L (random weights) exported to ONNX static and dynamic, with ``RTDETR(file).predict`` answers."""
    return build_fixture(
        "ultralytics-rtdetr-l",
        ref_python("ultralytics"),
        HERE / "build_rtdetr.py",
        inputs=(*SHARED_INPUTS, HERE / "build_formats.py"),
    )


def yolov5_fixture() -> Path:
    """The classic anchor-based YOLOv5n ([1, N, 5+C], objectness) from the ``yolov5`` package, with its own answers."""
    return build_fixture("yolov5-classic", ref_python("yolov5"), HERE / "build_yolov5.py", inputs=SHARED_INPUTS)


def variant_file(fixture: Path, variant: str) -> tuple[Path, dict[str, Any]]:
    """The exported file of ``variant`` and its reference answers; raises naming the exporter's error."""
    entry = json.loads((fixture / "build.json").read_text())["variants"][variant]
    if "error" in entry:
        raise VariantMissing(f"Ultralytics could not export {variant} in {fixture}: {entry['error']}")
    path = fixture / entry["file"]
    return path, json.loads((path.parent / "reference.json").read_text())


class VariantMissing(RuntimeError):
    """The reference exporter did not produce this variant (the message carries its error)."""


def agent_matches_reference(
    model: Path, fixture: Path, reference: dict[str, Any], where: str, input_size: tuple[int, int] | None = None
) -> int:
    """Load ``model`` bare, run it on every reference image, compare box for box; return the matched count.

    ``input_size`` is config ``model.input_size``, for a dynamic-axis file whose metadata does not say its size.
    """
    thresholds = Thresholds(score=reference["threshold"], iou=reference["iou"], max_detections=reference["max_det"])
    detector = load_detector(model, thresholds=thresholds, input_size=input_size)
    problems, matched = [], 0
    try:
        for name, expected in reference["images"].items():
            frame = cv2.imread(str(fixture / name))
            assert frame is not None, f"{fixture / name} is not a readable image"
            try:
                matched += refs.assert_detections_match(
                    detector.detect(frame), expected["detections"], reference["threshold"], f"{where} {name}"
                )
            except AssertionError as exc:
                problems.append(str(exc))
    finally:
        detector.close()
    assert not problems, f"{where}: {len(problems)} of {len(reference['images'])} images differ:\n" + "\n".join(problems)
    return matched
