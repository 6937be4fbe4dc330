"""``edge-agent bench-compare``: the user's float model vs our int8 conversion (vs Ultralytics predict), one run.

Every row sees the same decoded frames, in memory, in the same process: the agent with the original float
model, the agent with the converted model, and Ultralytics ``predict`` on the original when the
``ultralytics`` package is importable here (or, with ``--ultralytics-python``, in that interpreter: then
its row is marked as measured in a child process). Speed is end-to-end per frame (preprocess, invoke,
decode + NMS) at the operating threshold; accuracy is COCO mAP over a second, untimed pass at a low
threshold, when the image folder carries labels (YOLO ``.txt`` beside each image, or a COCO json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.cli_conventions import add_json_options
from agent.ground_truth import label_file, yolo_ground_truth

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MAP_SCORE, MAP_IOU, MAP_MAX_DET = 0.001, 0.7, 300  # Ultralytics val's settings: the mAP pass ranks everything
ULTRALYTICS_CHILD = r"""
import json, sys, time
import cv2
from ultralytics import YOLO
model_path, imgsz, conf, iou, repeat, files = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), \
    int(sys.argv[5]), sys.argv[6:]
frames = [cv2.imread(f) for f in files]
model = YOLO(model_path, task="detect")
for frame in frames[:3]:
    model.predict(frame, imgsz=imgsz, conf=conf, iou=iou, device="cpu", verbose=False)
times = []
for _ in range(repeat):
    for frame in frames:
        t0 = time.perf_counter()
        model.predict(frame, imgsz=imgsz, conf=conf, iou=iou, device="cpu", verbose=False)
        times.append(time.perf_counter() - t0)
dets = []
for i, frame in enumerate(frames):
    r = model.predict(frame, imgsz=imgsz, conf=0.001, iou=0.7, max_det=300, device="cpu", verbose=False)[0].boxes
    for (x1, y1, x2, y2), c, s in zip(r.xyxy.tolist(), r.cls.tolist(), r.conf.tolist()):
        dets.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s), "bbox": [x1, y1, x2 - x1, y2 - y1]})
print(json.dumps({"times": times, "detections": dets}))
"""


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ValueError(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in that folder")
    return files


def ground_truth(folder: Path, files: list[Path], frames: list[np.ndarray], labels: tuple[str, ...]) -> dict[str, Any] | None:
    """COCO-style ground truth (image ids 1..N in ``files`` order): a COCO json in the folder, else YOLO label files."""
    coco = _coco_json(folder, files)
    if coco is not None:
        return coco
    if not any(label_file(f).is_file() for f in files):
        return None
    return yolo_ground_truth([(path, frame.shape[1], frame.shape[0]) for path, frame in zip(files, frames, strict=True)], labels)


def _coco_json(folder: Path, files: list[Path]) -> dict[str, Any] | None:
    """A COCO json of ``folder`` re-keyed to our image ids and to category ids 1..C in the file's id order."""
    for candidate in sorted(folder.glob("*.json")):
        data = json.loads(candidate.read_text())
        if not (isinstance(data, dict) and "images" in data and "annotations" in data):
            continue
        categories = sorted(data.get("categories", []), key=lambda c: c["id"])
        category = {c["id"]: i + 1 for i, c in enumerate(categories)}  # class id k is category k+1, as in the manifest
        by_name = {img["file_name"]: img for img in data["images"]}
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for i, path in enumerate(files, 1):
            image = by_name.get(path.name)
            if image is None:
                continue
            images.append({**image, "id": i})
            annotations += [
                {**a, "image_id": i, "id": len(annotations) + k + 1, "category_id": category[a["category_id"]]}
                for k, a in enumerate(x for x in data["annotations"] if x["image_id"] == image["id"])
            ]
        return {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": c["name"]} for i, c in enumerate(categories)],
        }
    return None


def coco_map(gt: dict[str, Any] | None, detections: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(mAP@0.5, mAP@0.5:0.95), or Nones without labels or without faster-coco-eval."""
    if gt is None:
        return None, None
    try:
        import faster_coco_eval as fce
    except ImportError:
        print("note: faster-coco-eval is not installed: no mAP (pip install faster-coco-eval)", file=sys.stderr)
        return None, None
    known = {int(image["id"]) for image in gt["images"]}
    detections = [d for d in detections if d["image_id"] in known]  # images the labels do not cover are not scored
    if not detections:
        return 0.0, 0.0
    coco_gt = fce.COCO(gt, print_function=lambda *a, **k: None)
    ev = fce.COCOeval_faster(coco_gt, coco_gt.loadRes(detections), "bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])


def _row(name: str, times: list[float], maps: tuple[float | None, float | None], **extra: Any) -> dict[str, Any]:
    p50 = statistics.median(times) * 1000
    return {
        "row": name,
        "fps": round(len(times) / sum(times), 1),
        "ms_p50": round(p50, 2),
        "frames": len(times),
        "mAP50": None if maps[0] is None else round(maps[0], 4),
        "mAP50_95": None if maps[1] is None else round(maps[1], 4),
        **extra,
    }


def agent_row(
    name: str,
    model: Path,
    frames: list[np.ndarray],
    threads: int,
    repeat: int,
    score: float,
    iou: float,
    input_size: tuple[int, int] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], tuple[str, ...], int]:
    """The timed pass and the mAP pass of one agent row; returns (row without mAP, mAP-pass detections, labels, input width)."""
    from agent.backends.base import BackendOptions
    from agent.detector import load_detector
    from agent.manifest import Thresholds

    det = load_detector(
        model, BackendOptions(threads=threads), thresholds=Thresholds(score=score, iou=iou), input_size=input_size
    )
    try:
        for frame in frames[:3]:  # warm-up: first invokes allocate and pack weights
            det.detect(frame)
        times = []
        for _ in range(repeat):
            for frame in frames:
                t0 = time.perf_counter()
                det.detect(frame)
                times.append(time.perf_counter() - t0)
        det.set_thresholds(Thresholds(score=MAP_SCORE, iou=MAP_IOU, max_detections=MAP_MAX_DET))
        found = []
        for i, frame in enumerate(frames, 1):
            for d in det.detect(frame):
                assert d.box is not None
                found.append(
                    {
                        "image_id": i,
                        "category_id": d.class_id + 1,
                        "score": d.score,
                        "bbox": [d.box.x1, d.box.y1, d.box.x2 - d.box.x1, d.box.y2 - d.box.y1],
                    }
                )
        labels, imgsz = det.manifest.labels, det.manifest.input.width
        extra = {
            "model": model.name,
            "backend": det.backend.type_key,
            "threads": threads,
            "input": f"{det.manifest.input.width}x{det.manifest.input.height} {det.manifest.input.dtype.value}",
        }
    finally:
        det.close()
    return _row(name, times, (None, None), **extra), found, labels, imgsz


def ultralytics_row(
    model: Path,
    files: list[Path],
    gt: dict[str, Any] | None,
    imgsz: int,
    repeat: int,
    score: float,
    iou: float,
    python: str | None,
) -> dict[str, Any] | None:
    """Ultralytics predict on the original, here when importable, else in ``python``; None when neither."""
    if python is None:
        import importlib.util

        if importlib.util.find_spec("ultralytics") is None:
            return None
        python = sys.executable  # same interpreter; a child keeps Ultralytics' torch threads out of the agent rows
        where = "this interpreter"
    else:
        where = f"child process ({python})"
    cmd = [python, "-c", ULTRALYTICS_CHILD, str(model), str(imgsz), str(score), str(iou), str(repeat), *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={"YOLO_OFFLINE": "1", **_env()})
    if proc.returncode != 0:
        raise RuntimeError(f"Ultralytics predict failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return _row(
        "Ultralytics predict + original",
        data["times"],
        coco_map(gt, data["detections"]),
        model=model.name,
        backend="ultralytics",
        threads="its default",
        input=f"{imgsz}x{imgsz}",
        measured_in=where,
    )


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def bench_compare(
    images: Path,
    original: Path,
    converted: Path,
    threads: int,
    repeat: int = 3,
    score: float = 0.25,
    iou: float = 0.7,
    input_size: tuple[int, int] | None = None,
    ultralytics_python: str | None = None,
) -> dict[str, Any]:
    """The comparison as a dict: machine, rows (fps, p50 ms, mAP) and each row's speed relative to the baseline
    (Ultralytics predict when it ran, else the agent with the original)."""
    import cv2

    files = image_files(images)
    frames: list[np.ndarray] = []
    for f in files:
        frame = cv2.imread(str(f))
        if frame is None:
            raise ValueError(f"--images: cannot decode {f} (corrupt or not an image)")
        frames.append(frame)
    rows: list[dict[str, Any]] = []
    gt: dict[str, Any] | None = None
    imgsz = 0
    for name, model in (("agent + original", original), ("agent + converted", converted)):
        row, found, labels, imgsz = agent_row(name, model, frames, threads, repeat, score, iou, input_size)
        gt = gt or ground_truth(images, files, frames, labels)
        m50, m5095 = coco_map(gt, found)
        row.update(mAP50=None if m50 is None else round(m50, 4), mAP50_95=None if m5095 is None else round(m5095, 4))
        rows.append(row)
    reference = ultralytics_row(original, files, gt, imgsz, repeat, score, iou, ultralytics_python)
    if reference is not None:
        rows.append(reference)
    base = rows[-1] if reference is not None else rows[0]
    key = "speed_vs_ultralytics" if reference is not None else "speed_vs_original"
    for row in rows:
        row[key] = round(row["fps"] / base["fps"], 2)
    return {
        "machine": platform.machine(),
        "images": len(files),
        "labelled": gt is not None,
        "score": score,
        "iou": iou,
        "repeat": repeat,
        "rows": rows,
    }


COLUMNS = (
    ("row", "run"),
    ("model", "model"),
    ("backend", "backend"),
    ("input", "input"),
    ("threads", "threads"),
    ("fps", "fps"),
    ("ms_p50", "ms/frame p50"),
    ("mAP50", "mAP@0.5"),
    ("mAP50_95", "mAP@0.5:0.95"),
)


def run_bench_compare(args: argparse.Namespace) -> int:
    """``edge-agent bench-compare``: the table, or with --json the result as JSON on stdout; --output FILE writes it."""
    from agent.cli_conventions import run_with_json_output

    return run_with_json_output(args, lambda path: _compare_and_print(args, path))


def _compare_and_print(args: argparse.Namespace, json_path: Path | None) -> int:
    from rich.console import Console
    from rich.table import Table

    from agent.backends.base import default_threads
    from agent.bare_manifest import parse_input_size

    try:
        size = parse_input_size(args.input_size)
        image_files(Path(args.images))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console = Console() if sys.stdout.isatty() else Console(width=180)
    try:
        with console.status("running the same frames through every row"):
            result = bench_compare(
                Path(args.images),
                Path(args.original),
                Path(args.converted),
                args.threads or default_threads(),
                args.repeat,
                args.score,
                args.iou,
                size,
                args.ultralytics_python,
            )
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    key = next(k for k in result["rows"][0] if k.startswith("speed_vs_"))
    table = Table(
        title=f"edge-agent bench-compare · {result['machine']} · {result['images']} images x {result['repeat']} · "
        f"score >= {result['score']}"
    )
    for _, header in (*COLUMNS, (key, key.replace("_", " "))):
        table.add_column(header)
    for row in result["rows"]:
        table.add_row(*("-" if row.get(k) is None else str(row.get(k)) for k, _ in (*COLUMNS, (key, ""))))
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {json_path}")
    return 0


def register(sub: Any) -> None:
    """Add ``bench-compare`` to the ``edge-agent`` sub-commands."""
    p = sub.add_parser("bench-compare", help="original float model vs converted model (vs Ultralytics predict): fps and mAP")
    p.add_argument(
        "--images",
        required=True,
        help="folder of images (YOLO .txt labels beside them, or in Ultralytics' labels/ twin folder, give mAP)",
    )
    p.add_argument("--original", required=True, help="the user's float model (.onnx or .tflite)")
    p.add_argument("--converted", required=True, help="our conversion (e.g. the int8 model.tflite)")
    p.add_argument("--input-size", metavar="WxH", help="size for dynamic input axes")
    p.add_argument("--threads", type=int, help="agent inference threads (default: cores - 1)")
    p.add_argument("--repeat", type=int, default=3, help="timed passes over the images")
    p.add_argument("--score", type=float, default=0.25, help="operating score threshold of the timed passes")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU of the timed passes")
    p.add_argument(
        "--ultralytics-python",
        metavar="PYTHON",
        help="run Ultralytics predict in this interpreter (default: here, when ultralytics is importable)",
    )
    add_json_options(p, "the comparison")
    p.set_defaults(func=run_bench_compare)
