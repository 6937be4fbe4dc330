"""Fixture builder (Ultralytics reference venv): RT-DETR-L from its yaml, exported by Ultralytics' own exporter to
ONNX (static and dynamic), answered by ``RTDETR(file).predict``.

Same layout as build_formats.py (``images/``, ``<variant>/rtdetr-l.onnx`` + ``reference.json``, ``build.json``).
Its export has one ``[1, 300, 6]`` output like the NMS-free YOLO heads, but the rows are cx, cy, w, h normalized to
0..1, then score and class; and its predictor stretches the frame to the square input (``LetterBox(scale_fill=True)``)
where YOLO letterboxes. Random weights get structure as in build_formats.py: BatchNorm statistics from the probe
scenes, and the decoder's class heads shifted so that a share of the 300 queries per image clears the threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from build_formats import CONF, IOU, MAX_DET, PROBE_SEED, export_variant, onnx_facts
from scene_data import write_probe_images

IMGSZ = 320
QUERY_SHARE = 0.02  # of the 300 queries per probe scene, scored above 0.5 after the shift


def give_structure(net: Any, images: list[Path]) -> float:
    """BatchNorm statistics from ``images``; every decoder layer's class head shifted; returns the shift."""
    import torch

    frames = [cv2.resize(cv2.imread(str(p)), (IMGSZ, IMGSZ))[:, :, ::-1].transpose(2, 0, 1) for p in images]
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(frames))).float() / 255
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    net.train()
    with torch.no_grad():
        net(batch)
    net.eval()
    with torch.no_grad():
        rows = net(batch)[0]  # (B, 300, 6): box, score, class
    logits = torch.logit(rows[..., 4].clamp(1e-7, 1 - 1e-7)).flatten()
    shift = -float(torch.quantile(logits, 1 - QUERY_SHARE))
    for layer in net.model[-1].dec_score_head:
        with torch.no_grad():
            layer.bias += shift
    return shift


def predict_reference(path: Path, images: list[Path], root: Path) -> dict[str, Any]:
    from ultralytics import RTDETR

    model = RTDETR(str(path))
    answers = {}
    for image in images:
        boxes = model.predict(str(image), imgsz=IMGSZ, conf=CONF, max_det=MAX_DET, device="cpu", verbose=False)[0].boxes
        rows = zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True)
        answers[image.relative_to(root).as_posix()] = {
            "detections": [{"box": [float(v) for v in b], "class_id": int(c), "score": float(s)} for b, c, s in rows]
        }
    return {"threshold": CONF, "iou": IOU, "max_det": MAX_DET, "imgsz": IMGSZ, "images": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="onnx,onnx-dynamic")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ["YOLO_CONFIG_DIR"] = str(out / ".ultralytics")  # settings stay in the fixture folder
    import torch
    import ultralytics
    from ultralytics import RTDETR

    torch.manual_seed(0)
    images = write_probe_images(out / "images", PROBE_SEED)
    model = RTDETR("rtdetr-l.yaml")
    facts: dict[str, Any] = {"model": "rtdetr-l.yaml", "ultralytics": ultralytics.__version__, "imgsz": IMGSZ,
                             "bias_shift": give_structure(model.model, images), "variants": {}}  # fmt: skip
    for variant in args.variants.split(","):
        started, entry = time.monotonic(), {}
        try:
            path = export_variant(model, "rtdetr-l", variant, IMGSZ, out)
            entry["file"] = str(path.relative_to(out))
            entry.update(onnx_facts(path))
            reference = predict_reference(path, images, out)
            (path.parent / "reference.json").write_text(json.dumps(reference, indent=1))
            entry["boxes"] = sum(len(v["detections"]) for v in reference["images"].values())
        except Exception as exc:  # noqa: BLE001 - reported in build.json; the test names it
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-4000:]
        entry["total_s"] = round(time.monotonic() - started, 1)
        facts["variants"][variant] = entry
        print(variant, {k: v for k, v in entry.items() if k not in ("traceback", "metadata")}, flush=True)
    (out / "build.json").write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
