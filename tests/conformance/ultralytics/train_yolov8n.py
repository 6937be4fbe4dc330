"""Train the YOLOv8n conformance fixture with Ultralytics' own trainer on scenes from agent/sources/scenes.py.

Run once by hand in the Ultralytics reference venv (CI never retrains; the result is committed)::

    ~/.cache/edge-agent/venv-ultralytics/bin/python tests/conformance/ultralytics/train_yolov8n.py \
        --work /tmp/yolov8n-scenes --out tests/conformance/assets/yolov8n_scenes.pt

Offline by construction: the model is built from its yaml (no pretrained download), plots are off (no
font download), AMP is off on CPU (no AMP-check weights), and Ultralytics' settings live in the work folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from scene_data import TRAIN_SEED, VAL_SEED, write_dataset_yaml, write_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (data set, Ultralytics run)")
    parser.add_argument("--out", type=Path, required=True, help="where to copy the stripped best.pt")
    parser.add_argument("--train", type=int, default=1200, help="training scenes")
    parser.add_argument("--val", type=int, default=120, help="validation scenes (best.pt is picked on these)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--close-mosaic", type=int, default=2, help="last epochs trained without mosaic")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # before the first ultralytics import: settings (and anything it would cache) stay in the work folder
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_CONFIG_DIR"] = str(work / "settings")
    data = work / "data"
    if not (data / "data.yaml").is_file():
        started = time.monotonic()
        write_split(data, "train", TRAIN_SEED, args.train)
        write_split(data, "val", VAL_SEED, args.val)
        write_dataset_yaml(data, "train", "val")
        print(f"data set: {args.train} train + {args.val} val scenes in {time.monotonic() - started:.0f} s", flush=True)

    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    started = time.monotonic()
    model.train(
        data=str(data / "data.yaml"),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        device="cpu",
        workers=args.workers,
        project=str(work / "runs"),
        name="train",
        exist_ok=True,
        pretrained=False,
        amp=False,
        plots=False,
        seed=0,
        deterministic=False,
        cache="ram",
        close_mosaic=args.close_mosaic,
        verbose=True,
        # a short CPU budget: a short warm-up and a fixed AdamW rate instead of the auto choice
        optimizer="AdamW",
        lr0=0.002,
        warmup_epochs=0.5,
    )
    print(f"trained {args.epochs} epochs in {time.monotonic() - started:.0f} s", flush=True)
    best = work / "runs" / "train" / "weights" / "best.pt"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
