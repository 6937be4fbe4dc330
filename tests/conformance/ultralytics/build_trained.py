"""Fixture builder (Ultralytics reference venv): the committed trained YOLOv8n, exported by Ultralytics, with
Ultralytics ``predict`` answers and Ultralytics ``val`` scores on held-out scenes.

Layout of ``--out`` (the variants as in build_formats.py)::

    best.pt                         a copy of tests/conformance/assets/yolov8n_scenes.pt
    <variant>/yolov8n_scenes.onnx   Ultralytics' exports (onnx static, onnx-dynamic, tflite when it exports offline)
    <variant>/reference.json        predict (Ultralytics defaults conf 0.25, iou 0.7) on images/ and heldout/ scenes
    heldout/                        unseen scenes as a YOLO split (images/test, labels/test, data.yaml)
    val.json                        Ultralytics val of best.pt and of each exported file on heldout/
    build.json                      versions, tensor facts, timings, export errors
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import traceback
from pathlib import Path

from build_formats import export_variant, onnx_facts, predict_reference
from scene_data import HELDOUT_SEED, write_dataset_yaml, write_probe_images, write_split
from score_ultralytics import score

WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "yolov8n_scenes.pt"
IMGSZ = 320  # the training size
HELDOUT = 150  # scenes for the mAP comparison
BOX_FOR_BOX = 30  # of them, also compared box for box (with the odd-aspect probes)
PROBE_SEED = 11
# Ultralytics' own defaults for predict and val: the answer a user of Ultralytics gets.
PREDICT = {"conf": 0.25, "iou": 0.7, "max_det": 300}
VAL = {"conf": 0.001, "iou": 0.7, "max_det": 300}
VARIANTS = ("onnx", "onnx-dynamic", "tflite")


def validate(path: Path, data: Path, out: Path, **extra: object) -> dict[str, float]:
    """Ultralytics val of ``path`` on the held-out split (batch 1: static exports take one image)."""
    from ultralytics import YOLO

    metrics = YOLO(str(path), task="detect").val(
        data=str(data),
        split="val",
        imgsz=IMGSZ,
        batch=1,
        device="cpu",
        plots=False,
        verbose=False,
        project=str(out / ".val"),
        name=path.parent.name,
        exist_ok=True,
        **VAL,
        **extra,
    )
    return {"map50_95": float(metrics.box.map), "map50": float(metrics.box.map50)}


def predict_scored(path: Path, split: Path, names: dict[int, str]) -> dict[str, float]:
    """Ultralytics predict on every held-out scene at val's thresholds, scored by val's own matcher and AP.

    The like-for-like oracle for the agent, which runs predict's single-label NMS: val's own number also keeps a
    second and third class per box (``multi_label=True`` in its NMS), which predict and the agent never report.
    """
    from ultralytics import YOLO

    model = YOLO(str(path), task="detect")
    found = {}
    for image in sorted((split / "images" / "test").iterdir()):
        boxes = model.predict(str(image), imgsz=IMGSZ, device="cpu", rect=False, verbose=False, save=False, **VAL)[0].boxes
        found[image.name] = [
            [*b, s, c] for b, s, c in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True)
        ]
    return score(split, found, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="another checkpoint (while developing)")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ["YOLO_CONFIG_DIR"] = str(out / ".ultralytics")  # settings stay in the fixture folder
    import torch
    import ultralytics
    from ultralytics import YOLO

    weights = out / "best.pt"
    shutil.copyfile(args.weights, weights)
    probes = write_probe_images(out / "images", PROBE_SEED)
    heldout = write_split(out / "heldout", "test", HELDOUT_SEED, HELDOUT)
    data = write_dataset_yaml(out / "heldout", "test", "test")
    images = probes + heldout[:BOX_FOR_BOX]
    model = YOLO(str(weights))
    facts: dict[str, object] = {
        "weights": args.weights.name,
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "imgsz": IMGSZ,
        "names": model.names,
        "predict": PREDICT,
        "val": VAL,
        "variants": {},
    }
    scores: dict[str, object] = {"settings": {**VAL, "imgsz": IMGSZ, "images": HELDOUT, "exports_rect": False}, "files": {}}
    started = time.monotonic()
    scores["files"]["best.pt"] = validate(weights, data, out)  # type: ignore[index]
    print("val best.pt", scores["files"]["best.pt"], f"{time.monotonic() - started:.0f} s", flush=True)  # type: ignore[index]
    for variant in args.variants.split(","):
        started = time.monotonic()
        entry: dict[str, object] = {}
        try:
            path = export_variant(model, "yolov8n_scenes", variant, IMGSZ, out)
            entry["file"] = str(path.relative_to(out))
            entry["export_s"] = round(time.monotonic() - started, 1)
            if path.suffix == ".onnx":
                entry.update(onnx_facts(path))
            reference = predict_reference(path, images, IMGSZ, out, **PREDICT)
            (path.parent / "reference.json").write_text(json.dumps(reference, indent=1))
            entry["boxes"] = sum(len(v["detections"]) for v in reference["images"].values())  # type: ignore[union-attr]
            scores["files"][entry["file"]] = {  # type: ignore[index]
                # rect=False: on a dynamic-axis file val otherwise batches at each frame's stride-aligned rectangle
                # (320x256 here); the agent fixes the input at imgsz square, as a static export does
                **validate(path, data, out, rect=False),
                "predict": predict_scored(path, out / "heldout", model.names),
            }
        except Exception as exc:  # noqa: BLE001 - a variant that cannot be exported is reported, the others go on
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-4000:]
        entry["total_s"] = round(time.monotonic() - started, 1)
        facts["variants"][variant] = entry  # type: ignore[index]
        print(variant, {k: v for k, v in entry.items() if k not in ("traceback", "metadata")}, flush=True)
    (out / "val.json").write_text(json.dumps(scores, indent=1))
    (out / "build.json").write_text(json.dumps(facts, indent=1))
    shutil.rmtree(out / ".val", ignore_errors=True)


if __name__ == "__main__":
    main()
