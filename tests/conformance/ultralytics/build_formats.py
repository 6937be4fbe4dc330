"""Fixture builder (Ultralytics reference venv): one model family from its yaml, exported by Ultralytics' own
exporter, with Ultralytics ``predict`` answers on the same files and images.

Layout of ``--out``::

    images/probe_*.jpg|png         scenes from agent/sources/scenes.py, camera-sized and odd aspect ratios
    <variant>/<model>.onnx|tflite  one exported file per variant (onnx, onnx-dynamic, tflite)
    <variant>/reference.json       Ultralytics predict on that file (tests/conformance/refs.py format)
    build.json                     versions, output shapes, timings, and each variant that could not be exported

Random weights answer with near-constant scores (activations fade through the untrained stack), so the builder
gives them structure first: BatchNorm statistics are measured on the probe scenes, and the class biases are
shifted so that a few candidates per image clear the threshold. Boxes and scores then vary from anchor to
anchor, which is what a box-for-box comparison needs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from scene_data import write_probe_images

PROBE_SEED = 7
# One share of all candidates (over the probe scenes) whose class score lands above 0.5 after the bias shift.
ABOVE_THRESHOLD_SHARE = 0.003
CONF, IOU, MAX_DET = 0.5, 0.45, 100
VARIANTS = ("onnx", "onnx-dynamic", "tflite")


def give_structure(net: Any, images: list[Path], imgsz: int) -> float:
    """Measure BatchNorm statistics on ``images`` and shift the class biases; return the shift."""
    import cv2
    import torch
    from ultralytics.data.augment import LetterBox

    letterbox = LetterBox((imgsz, imgsz), auto=False)
    batch = (
        torch.stack(
            [
                torch.from_numpy(np.ascontiguousarray(letterbox(image=cv2.imread(str(p)))[:, :, ::-1].transpose(2, 0, 1)))
                for p in images
            ]
        ).float()
        / 255
    )
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    net.train()
    with torch.no_grad():
        net(batch)
    net.eval()
    with torch.no_grad():
        out = net(batch)
    out = out[0] if isinstance(out, (list, tuple)) else out
    if out.shape[-1] == 6 and out.shape[1] <= 1000:
        raise AssertionError(f"expected the raw one-to-many head in PyTorch eval, got {tuple(out.shape)}")
    head = net.model[-1]
    nc = head.nc
    scores = out[:, 4 : 4 + nc].amax(1) if out.shape[1] == 4 + nc else out[..., 4 : 4 + nc].amax(-1)
    logits = torch.logit(scores.clamp(1e-7, 1 - 1e-7)).flatten()
    shift = -float(torch.quantile(logits, 1 - ABOVE_THRESHOLD_SHARE))
    for name in ("cv3", "one2one_cv3"):
        for branch in getattr(head, name, None) or []:
            last = branch[-1]
            with torch.no_grad():
                last.bias += shift
    return shift


def export_variant(model: Any, stem: str, variant: str, imgsz: int, out: Path) -> Path:
    """Export with Ultralytics' own exporter and move the file into ``out/variant``."""
    folder = out / variant
    folder.mkdir(parents=True, exist_ok=True)
    if variant.startswith("onnx"):
        made = model.export(format="onnx", imgsz=imgsz, dynamic=variant == "onnx-dynamic", simplify=True, device="cpu")
    else:
        made = model.export(format="tflite", imgsz=imgsz, device="cpu")
    made = Path(made)
    target = folder / f"{stem}{made.suffix}"
    shutil.move(str(made), target)
    return target


def predict_reference(
    path: Path, images: list[Path], imgsz: int, root: Path, conf: float = CONF, iou: float = IOU, max_det: int = MAX_DET
) -> dict[str, object]:
    """Ultralytics predict on ``path``: the reference answers in frame pixels.

    ``rect=False``: on a dynamic-axis file Ultralytics predict otherwise shrinks the input to the frame's
    stride-aligned rectangle (480x640 for a 640x480 frame); the agent, like a static export, fixes the input
    at ``imgsz`` square, so the reference is asked for that same geometry.
    """
    from ultralytics import YOLO

    model = YOLO(str(path), task="detect")
    answers: dict[str, object] = {}
    for image in images:
        result = model.predict(
            source=str(image),
            imgsz=imgsz,
            conf=conf,
            iou=iou,
            max_det=max_det,
            device="cpu",
            rect=False,
            verbose=False,
            save=False,
        )[0]
        boxes = result.boxes
        answers[image.relative_to(root).as_posix()] = {
            "detections": [
                {"box": [float(v) for v in xyxy], "class_id": int(c), "score": float(s)}
                for xyxy, c, s in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True)
            ]
        }
    return {"threshold": conf, "iou": iou, "max_det": max_det, "imgsz": imgsz, "images": answers}


def onnx_facts(path: Path) -> dict[str, object]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = lambda t: [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]  # noqa: E731
    return {
        "inputs": {t.name: dims(t) for t in model.graph.input},
        "outputs": {t.name: dims(t) for t in model.graph.output},
        "metadata": {p.key: p.value for p in model.metadata_props},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", required=True, help="an Ultralytics model yaml, e.g. yolov8n.yaml")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ["YOLO_CONFIG_DIR"] = str(out / ".ultralytics")  # settings stay in the fixture folder
    import torch
    import ultralytics
    from ultralytics import RTDETR, YOLO

    torch.manual_seed(0)
    images = write_probe_images(out / "images", PROBE_SEED)
    stem = Path(args.model).stem
    model = (RTDETR if stem.startswith("rtdetr") else YOLO)(args.model)
    facts: dict[str, object] = {
        "model": args.model,
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "imgsz": args.imgsz,
        "bias_shift": give_structure(model.model, images, args.imgsz),
        "variants": {},
    }
    for variant in args.variants.split(","):
        started = time.monotonic()
        entry: dict[str, object] = {}
        try:
            path = export_variant(model, stem, variant, args.imgsz, out)
            entry["file"] = str(path.relative_to(out))
            entry["export_s"] = round(time.monotonic() - started, 1)
            if path.suffix == ".onnx":
                entry.update(onnx_facts(path))
            reference = predict_reference(path, images, args.imgsz, out)
            (path.parent / "reference.json").write_text(json.dumps(reference, indent=1))
            entry["boxes"] = sum(len(v["detections"]) for v in reference["images"].values())  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a variant that cannot be exported is reported, the others go on
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-4000:]
        facts["variants"][variant] = entry  # type: ignore[index]
        print(variant, {k: v for k, v in entry.items() if k != "traceback"}, flush=True)
    (out / "build.json").write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
