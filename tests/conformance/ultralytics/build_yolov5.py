"""Fixture builder (yolov5 reference venv): the classic anchor-based YOLOv5n ([1, N, 5+C] with objectness) from the
``yolov5`` package's own yaml, exported by its own ``export_onnx``, answered by its own letterbox, ONNX backend and
``non_max_suppression`` (what its ``detect.py`` runs).

Layout of ``--out``: ``images/``, ``<variant>/yolov5n.onnx`` + ``<variant>/reference.json`` for ``onnx`` and
``onnx-dynamic``, ``build.json``. Random weights get structure as in build_formats.py (BatchNorm statistics on the
probe scenes, objectness and class biases shifted), and the threshold is chosen so that a few candidates per image
clear it. Boxes go back to the frame through the geometry its letterbox really applied (``to_frame``), unrounded
(``detect.py`` rounds them to whole pixels for drawing).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import time
import traceback
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scene_data import write_probe_images

_TORCH_ONNX_EXPORT = torch.onnx.export
PROBE_SEED = 7
IMGSZ = 320
IOU, MAX_DET = 0.45, 100
ABOVE_THRESHOLD_SHARE = 0.004  # of all candidates over the probe scenes, scored above the chosen threshold


def letterboxed(path: Path) -> tuple[np.ndarray, torch.Tensor, tuple[int, int, int, int]]:
    """The frame, yolov5's own input for it (``LoadImages`` with ``auto=False``, as for an ONNX model), and where
    its letterbox put the frame: ``(left, top, new_w, new_h)`` in input pixels, the borders it really added."""
    from yolov5.utils.augmentations import letterbox

    frame = cv2.imread(str(path))
    image, (gain, _), (dw, dh) = letterbox(frame, IMGSZ, stride=32, auto=False)
    height, width = frame.shape[:2]
    placed = (round(dw - 0.1), round(dh - 0.1), round(width * gain), round(height * gain))  # as its copyMakeBorder/resize
    image = np.ascontiguousarray(image.transpose((2, 0, 1))[::-1])  # HWC BGR -> CHW RGB
    return frame, torch.from_numpy(image).float()[None] / 255, placed


def to_frame(boxes: torch.Tensor, frame: np.ndarray, placed: tuple[int, int, int, int]) -> torch.Tensor:
    """Input-pixel boxes -> frame pixels through the geometry letterbox applied (then yolov5's ``clip_boxes``).

    ``detect.py``'s ``scale_boxes`` instead guesses the border as ``(320 - 251 * gain) / 2`` = 39.4 px where
    letterbox added 39, and divides both axes by one gain where the rounded resize scaled them apart: up to half a
    pixel off on odd frame sizes. Ultralytics' current ``scale_boxes`` maps exactly this way (per-axis gain,
    rounded border); build.json records how far the package's own mapping lies from it.
    """
    from yolov5.utils.general import clip_boxes

    left, top, new_w, new_h = placed
    height, width = frame.shape[:2]
    out = boxes.clone()
    out[:, [0, 2]] = (out[:, [0, 2]] - left) * (width / new_w)
    out[:, [1, 3]] = (out[:, [1, 3]] - top) * (height / new_h)
    clip_boxes(out, frame.shape)
    return out


def give_structure(model: Any, batch: torch.Tensor) -> float:
    """BatchNorm statistics from ``batch``, objectness and class biases shifted; returns the score threshold."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()
    detect = model.model[-1]

    def logits() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = model(batch)[0]  # (B, N, 5+C) after sigmoid
        out = torch.logit(out.clamp(1e-7, 1 - 1e-7))
        return out[..., 4].flatten(), out[..., 5:].amax(-1).flatten()

    obj, cls = logits()
    shift_obj = 1.5 - float(torch.quantile(obj, 0.97))  # the top 3 % of anchors see an object (obj >= 0.82)
    shift_cls = 1.5 - float(torch.quantile(cls, 0.97))
    for conv in detect.m:
        with torch.no_grad():
            bias = conv.bias.view(detect.na, -1)
            bias[:, 4] += shift_obj
            bias[:, 5:] += shift_cls
    with torch.no_grad():
        out = model(batch)[0]
    scores = (out[..., 4:5] * out[..., 5:]).amax(-1).flatten()
    return round(float(torch.quantile(scores, 1 - ABOVE_THRESHOLD_SHARE)), 3)


def export(model: Any, out: Path, dynamic: bool) -> Path:
    """yolov5's own ``export_onnx`` (opset 12, its export-mode Detect), as ``export.py --include onnx`` runs it."""
    from yolov5.export import export_onnx
    from yolov5.models.yolo import Detect

    for module in model.modules():
        if isinstance(module, Detect):
            module.inplace, module.dynamic, module.export = False, dynamic, True
    image = torch.zeros(1, 3, IMGSZ, IMGSZ)
    for _ in range(2):
        model(image)  # dry runs, as export.py does
    # yolov5 7.0 was written for the TorchScript-based exporter, torch's default before 2.9; the dynamo default
    # of torch 2.14 cannot trace its fused convolutions, so the call gets the exporter it was written for.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        torch.onnx.export = functools.partial(_TORCH_ONNX_EXPORT, dynamo=False)
    folder = out / ("onnx-dynamic" if dynamic else "onnx")
    folder.mkdir(parents=True, exist_ok=True)
    made, _ = export_onnx(model, image, folder / "yolov5n.pt", 12, dynamic, False)
    if made is None:
        raise RuntimeError("yolov5 export_onnx failed (its log above says why)")
    return Path(made)


def reference(path: Path, images: list[Path], threshold: float, root: Path) -> tuple[dict[str, Any], float]:
    """yolov5's own answers on ``images``, and the largest gap (px) between its own ``scale_boxes`` and ``to_frame``."""
    from yolov5.models.common import DetectMultiBackend
    from yolov5.utils.general import non_max_suppression, scale_boxes

    backend = DetectMultiBackend(str(path), device=torch.device("cpu"))
    answers, gap = {}, 0.0
    for image in images:
        frame, tensor, placed = letterboxed(image)
        det = non_max_suppression(backend(tensor), threshold, IOU, max_det=MAX_DET)[0]
        own = scale_boxes(tensor.shape[2:], det[:, :4].clone(), frame.shape)
        det[:, :4] = to_frame(det[:, :4], frame, placed)
        gap = max(gap, float((own - det[:, :4]).abs().max()) if len(det) else 0.0)
        answers[image.relative_to(root).as_posix()] = {
            "detections": [
                {"box": [float(v) for v in row[:4]], "class_id": int(row[5]), "score": float(row[4])} for row in det.tolist()
            ]
        }
    return {"threshold": threshold, "iou": IOU, "max_det": MAX_DET, "imgsz": IMGSZ, "images": answers}, gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out.resolve()
    import yolov5
    from yolov5.models.yolo import Model

    torch.manual_seed(0)
    images = write_probe_images(out / "images", PROBE_SEED)
    model = Model(str(Path(yolov5.__file__).parent / "models" / "yolov5n.yaml"), ch=3, nc=80)
    model.names = {i: f"class{i}" for i in range(80)}
    threshold = give_structure(model, torch.cat([letterboxed(p)[1] for p in images]))
    model = model.fuse().eval()
    facts: dict[str, Any] = {
        "yolov5": yolov5.__version__,
        "torch": torch.__version__,
        "imgsz": IMGSZ,
        "threshold": threshold,
        "variants": {},
    }
    for dynamic in (False, True):
        variant, started, entry = ("onnx-dynamic" if dynamic else "onnx"), time.monotonic(), {}
        try:
            path = export(model, out, dynamic)
            entry["file"] = str(path.relative_to(out))
            answer, entry["scale_boxes_gap_px"] = reference(path, images, threshold, out)
            (path.parent / "reference.json").write_text(json.dumps(answer, indent=1))
            entry["boxes"] = sum(len(v["detections"]) for v in answer["images"].values())
        except Exception as exc:  # noqa: BLE001 - reported in build.json; the test names it
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-4000:]
        entry["total_s"] = round(time.monotonic() - started, 1)
        facts["variants"][variant] = entry
        print(variant, {k: v for k, v in entry.items() if k != "traceback"}, flush=True)
    (out / "build.json").write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
