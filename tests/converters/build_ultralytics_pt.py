"""Fixture builder (Ultralytics reference venv): an Ultralytics ``.pt`` checkpoint and Ultralytics' own answers on it.

``--model yolov8n.yaml`` builds the family from its yaml and gives the random weights structure the way
tests/conformance/ultralytics/build_formats.py does (shared code, so the probe scenes and scores agree);
``--model path/to/best.pt`` takes a trained checkpoint as it is. Writes ``--out``:

    model.pt                  the checkpoint (Ultralytics' own save)
    images/probe_*            the probe scenes of build_formats.py
    reference.json            Ultralytics ``predict`` on model.pt (tests/conformance/refs.py format)
    val/*.jpg + *.txt         with --heldout N: held-out scenes with YOLO labels side by side
    val.json                  Ultralytics ``val`` of model.pt on val/ (mAP@0.5, mAP@0.5:0.95)
    calibration/*.jpg         with --calibration N: scenes of the training seed (representative, unlabelled)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "conformance" / "ultralytics"))

from build_formats import CONF, IOU, PROBE_SEED, give_structure, predict_reference  # noqa: E402
from scene_data import CLASSES, HELDOUT_SEED, TRAIN_SEED, write_probe_images, write_split  # noqa: E402


def flat_split(folder: Path, seed: int, count: int, labels: bool) -> None:
    """``count`` scenes as ``folder/*.jpg`` (+ ``*.txt`` YOLO labels beside them, which both Ultralytics and
    the converter's --validate read)."""
    tmp = folder.parent / f".{folder.name}-split"
    write_split(tmp, "x", seed, count)
    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted((tmp / "images" / "x").iterdir()):
        shutil.move(str(image), folder / image.name)
        if labels:
            shutil.move(str(tmp / "labels" / "x" / f"{image.stem}.txt"), folder / f"{image.stem}.txt")
    shutil.rmtree(tmp)


def ultralytics_val(model_path: Path, folder: Path, imgsz: int, out: Path) -> dict[str, float]:
    from ultralytics import YOLO

    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    data = out / "val.yaml"
    data.write_text(f"path: {folder}\ntrain: {folder}\nval: {folder}\nnames:\n{names}\n")
    metrics = YOLO(str(model_path)).val(
        data=str(data),
        imgsz=imgsz,
        batch=8,
        device="cpu",
        plots=False,
        verbose=False,
        project=str(out / ".runs"),
        name="val",
        exist_ok=True,
    )
    return {"mAP50": float(metrics.box.map50), "mAP50_95": float(metrics.box.map), "images": len(list(folder.glob("*.jpg")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", required=True, help="an Ultralytics model yaml (e.g. yolo11n.yaml) or a trained .pt")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--heldout", type=int, default=0, help="labelled held-out scenes for Ultralytics val")
    parser.add_argument("--calibration", type=int, default=0, help="unlabelled scenes for int8 calibration")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ["YOLO_CONFIG_DIR"] = str(out / ".ultralytics")
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    images = write_probe_images(out / "images", PROBE_SEED)
    target = out / "model.pt"
    if args.model.endswith(".pt"):
        shutil.copyfile(REPO / args.model, target)
    else:
        model = YOLO(args.model)
        give_structure(model.model, images, args.imgsz)
        model.save(str(target))
    reference = predict_reference(target, images, args.imgsz, out)
    assert reference["threshold"] == CONF and reference["iou"] == IOU
    (out / "reference.json").write_text(json.dumps(reference, indent=1))
    if args.heldout:
        flat_split(out / "val", HELDOUT_SEED, args.heldout, labels=True)
        (out / "val.json").write_text(json.dumps(ultralytics_val(target, out / "val", args.imgsz, out), indent=1))
    if args.calibration:
        flat_split(out / "calibration", TRAIN_SEED, args.calibration, labels=False)
    print(json.dumps({"boxes": sum(len(v["detections"]) for v in reference["images"].values())}))


if __name__ == "__main__":
    main()
