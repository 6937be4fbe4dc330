"""Ultralytics ``val``'s own metric applied to detections made elsewhere (the agent's), in the Ultralytics venv.

``val`` scores with its own matcher (``DetectionValidator.match_predictions``) and AP (``DetMetrics`` ->
``ap_per_class``), which differ from COCO's: the same detections score points apart under the two. To compare
the agent with ``val`` itself, the agent's detections go through val's scoring code, against the same label files.

Usage: python score_ultralytics.py --split DIR --detections FILE  (prints one JSON line: map50_95, map50)
``FILE``: ``{"names": {id: name}, "images": {file name: [[x1, y1, x2, y2, score, class], ...]}}`` in frame pixels;
``DIR`` holds ``images/test`` and ``labels/test`` (YOLO rows ``class cx cy w h``, normalized).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch


def score(split: Path, found: dict[str, list[list[float]]], names: dict[int, str]) -> dict[str, float]:
    """mAP@0.5:0.95 and mAP@0.5 of ``found`` (file name -> rows) by val's own matcher and AP."""
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import DetMetrics, box_iou

    with tempfile.TemporaryDirectory() as scratch:  # the validator makes a save dir; nothing is saved there
        validator = DetectionValidator(args={"task": "detect", "project": scratch, "name": "score", "plots": False})
    metrics = DetMetrics(names=names)
    for name, rows in sorted(found.items()):
        image = split / "images" / "test" / name
        height, width = cv2.imread(str(image)).shape[:2]
        labels = np.loadtxt(split / "labels" / "test" / f"{image.stem}.txt", ndmin=2).reshape(-1, 5)
        gt_cls = labels[:, 0]
        cx, cy, w, h = (labels[:, k] * s for k, s in zip(range(1, 5), (width, height, width, height), strict=True))
        gt_boxes = torch.tensor(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), dtype=torch.float32)
        pred = np.array(sorted(rows, key=lambda r: -r[4]), dtype=np.float32).reshape(-1, 6)  # by descending score
        if len(gt_cls) and len(pred):
            iou = box_iou(gt_boxes, torch.from_numpy(pred[:, :4]))
            tp = validator.match_predictions(torch.from_numpy(pred[:, 5]), torch.from_numpy(gt_cls), iou).cpu().numpy()
        else:
            tp = np.zeros((len(pred), validator.niou), dtype=bool)
        metrics.update_stats(
            {
                "tp": tp,
                "target_cls": gt_cls,
                "target_img": np.unique(gt_cls),
                "conf": pred[:, 4],
                "pred_cls": pred[:, 5],
                "im_name": name,
            }
        )
    metrics.process()
    return {"map50_95": float(metrics.box.map), "map50": float(metrics.box.map50)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--detections", type=Path, required=True)
    args = parser.parse_args()
    found = json.loads(args.detections.read_text())
    names = {int(k): v for k, v in found["names"].items()}
    print(json.dumps(score(args.split, found["images"], names)))


if __name__ == "__main__":
    main()
