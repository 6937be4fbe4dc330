"""The trained YOLOv8n (tests/conformance/assets/yolov8n_scenes.pt, Ultralytics' trainer on agent scenes) through
Ultralytics' own exports: the agent answers as Ultralytics ``predict`` box for box on confident, meaningful boxes,
and its mAP on held-out scenes equals Ultralytics ``val`` of the same file within half a point.

Oracles: Ultralytics ``predict`` (its defaults: conf 0.25, IoU 0.7, 300 boxes) on the exported file, and
Ultralytics ``val`` (conf 0.001) of that file on the labelled held-out split. The agent's mAP is computed with
faster-coco-eval (COCO's 101-point AP, 300 detections per image, as val keeps) from the same label files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import pytest

from agent.detector import load_detector
from agent.manifest import Thresholds
from agent.sources.scenes import CLASSES
from tests.conformance.ultralytics.fixtures import VariantMissing, agent_matches_reference, trained_fixture, variant_file

pytestmark = pytest.mark.slow

VARIANTS = ("onnx", "onnx-dynamic", "tflite")
MAP_TOLERANCE = 0.005  # half a point, the bound


def _variant(variant: str) -> tuple[Path, Path, dict[str, Any]]:
    fixture = trained_fixture()
    try:
        path, reference = variant_file(fixture, variant)
    except VariantMissing as exc:
        pytest.fail(str(exc))
    return fixture, path, reference


@pytest.mark.parametrize("variant", VARIANTS)
def test_trained_matches_predict(variant: str) -> None:
    fixture, path, reference = _variant(variant)
    confident = [d for v in reference["images"].values() for d in v["detections"] if d["score"] >= 0.5]
    assert len(confident) >= 50, f"the trained model gives only {len(confident)} boxes above 0.5: not a trained model"
    assert agent_matches_reference(path, fixture, reference, f"trained yolov8n {variant}") >= 50


@pytest.mark.parametrize("variant", ["onnx", "onnx-dynamic"])
def test_trained_labels_from_metadata(variant: str) -> None:
    """The class names Ultralytics wrote into the file name the agent's detections: no manifest needed."""
    fixture, path, reference = _variant(variant)
    detector = load_detector(path)
    try:
        assert detector.labels == CLASSES
        name = next(iter(reference["images"]))
        found = detector.detect(cv2.imread(str(fixture / name)))
        assert found and all(d.label == CLASSES[d.class_id] for d in found)
    finally:
        detector.close()


def coco_ground_truth(split: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """COCO ground truth from a YOLO split (``images/test``, ``labels/test``), the labels Ultralytics val reads."""
    images, annotations, ids = [], [], {}
    for index, image in enumerate(sorted((split / "images" / "test").iterdir()), start=1):
        height, width = cv2.imread(str(image)).shape[:2]
        images.append({"id": index, "file_name": image.name, "width": width, "height": height})
        ids[image.name] = index
        for row in (split / "labels" / "test" / f"{image.stem}.txt").read_text().split("\n"):
            if not row.strip():
                continue
            c, cx, cy, w, h = (float(v) for v in row.split())
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": int(c),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": name} for i, name in enumerate(CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}, ids


def agent_map(path: Path, split: Path, settings: dict[str, Any]) -> dict[str, float]:
    """The agent's mAP@0.5:0.95 and mAP@0.5 on ``split`` with faster-coco-eval, at val's thresholds."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt, ids = coco_ground_truth(split)
    detector = load_detector(
        path, thresholds=Thresholds(score=settings["conf"], iou=settings["iou"], max_detections=settings["max_det"])
    )
    results = []
    try:
        for name, image_id in ids.items():
            for d in detector.detect(cv2.imread(str(split / "images" / "test" / name))):
                b = d.box
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": d.class_id,
                        "score": d.score,
                        "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1],
                    }
                )
    finally:
        detector.close()
    quiet = logging.getLogger("faster_coco_eval").debug
    coco_gt = COCO(gt, print_function=quiet)
    evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(results), "bbox", print_function=quiet)
    evaluator.params.maxDets = [1, 10, settings["max_det"]]  # val keeps up to max_det boxes per image
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {"map50_95": float(evaluator.stats[0]), "map50": float(evaluator.stats[1])}


@pytest.mark.parametrize("variant", VARIANTS)
def test_trained_map_equals_ultralytics_val(variant: str) -> None:
    fixture, path, _ = _variant(variant)
    scores = json.loads((fixture / "val.json").read_text())
    theirs = scores["files"][str(path.relative_to(fixture))]
    ours = agent_map(path, fixture / "heldout", scores["settings"])
    print(f"trained yolov8n {variant}: agent {ours} vs Ultralytics val {theirs} (best.pt: {scores['files']['best.pt']})")
    assert theirs["map50"] >= 0.5, f"Ultralytics val mAP@0.5 {theirs['map50']:.3f}: the fixture is barely trained"
    for key in ("map50_95", "map50"):
        assert abs(ours[key] - theirs[key]) <= MAP_TOLERANCE, (
            f"{variant}: agent {key} {ours[key]:.4f} vs Ultralytics val {theirs[key]:.4f} "
            f"(differ by {abs(ours[key] - theirs[key]) * 100:.2f} points, bound {MAP_TOLERANCE * 100:.1f})"
        )
