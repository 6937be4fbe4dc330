"""Run the source and the converted model on the same images: outputs, detections, mAP, latency."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.detector import Detector
from agent.ground_truth import label_file, yolo_ground_truth
from agent.manifest import ModelManifest, Thresholds
from converters.backends import SourceBackend, source_input_spec
from converters.calibration import image_files, read_bgr
from converters.source import SourceModel

MAP_THRESHOLDS = Thresholds(score=0.01, iou=0.6, max_detections=100)  # COCO-style: rank everything


@dataclass(slots=True)
class ModelRun:
    detections: list[dict[str, object]] = field(default_factory=list)  # COCO results, frame pixels
    raw: list[list[np.ndarray]] = field(default_factory=list)  # float outputs per image
    invoke_ms: list[float] = field(default_factory=list)
    operating: list[list[tuple[int, float, list[float]]]] = field(default_factory=list)  # at the manifest threshold


def load_ground_truth(folder: Path, labels: tuple[str, ...]) -> dict[str, object] | None:
    """COCO json (any *.json with images/annotations) or YOLO txt files beside the images; None without labels."""
    for candidate in sorted(folder.glob("*.json")):
        data = json.loads(candidate.read_text())
        if isinstance(data, dict) and "annotations" in data and "images" in data:
            return data
    files = image_files(folder, "validation")
    if not any(label_file(f).is_file() for f in files):
        return None
    sizes = [read_bgr(img).shape[:2] for img in files]
    return yolo_ground_truth([(img, w, h) for img, (h, w) in zip(files, sizes, strict=True)], labels)


def source_detector(source: SourceModel, manifest: ModelManifest, output_shapes: list[tuple[int, ...]]) -> Detector:
    spec = source_input_spec(manifest.input, source)
    src_manifest = manifest.model_copy(update={"input": spec, "thresholds": MAP_THRESHOLDS})
    return Detector(Path(source.name), src_manifest, "source", SourceBackend(source, output_shapes), "")


def _dequantized(det: Detector) -> list[np.ndarray]:
    outs = []
    for info, arr in zip(det.backend.outputs, det.backend.output_arrays(), strict=True):
        a = np.array(arr, np.float32)
        outs.append((a - info.zero_point) * info.scale if info.quantized else a)
    return outs


def run_model(det: Detector, files: list[Path], ids: list[int], op_score: float, warmup: int = 2) -> ModelRun:
    run = ModelRun()
    det.set_thresholds(MAP_THRESHOLDS)
    for _ in range(warmup):
        det.backend.invoke()
    for path, image_id in zip(files, ids, strict=True):
        image = read_bgr(path)
        geo = det.preprocess(image, _bgr(), image.shape[1], image.shape[0])
        t0 = time.perf_counter()
        det.invoke()
        run.invoke_ms.append((time.perf_counter() - t0) * 1000)
        run.raw.append(_dequantized(det))
        found = det.decode(geo)
        kept = []
        for d in found:
            assert d.box is not None
            b = [d.box.x1, d.box.y1, d.box.x2 - d.box.x1, d.box.y2 - d.box.y1]
            run.detections.append({"image_id": image_id, "category_id": d.class_id + 1, "score": d.score, "bbox": b})
            if d.score >= op_score:
                kept.append((d.class_id, d.score, [d.box.x1, d.box.y1, d.box.x2, d.box.y2]))
        run.operating.append(kept)
    return run


def _bgr() -> object:
    from agent.sources.base import PixelFormat

    return PixelFormat.BGR


def coco_eval(gt: dict[str, object], detections: list[dict[str, object]]) -> tuple[float, float, np.ndarray | None]:
    """(mAP@0.5, mAP@0.5:0.95, precision array [T,R,K,A,M]) with faster-coco-eval."""
    from converters.toolchain import require

    fce = require("faster_coco_eval", why="mAP in the validation report")
    quiet = logging.getLogger("faster_coco_eval").debug
    coco_gt = fce.COCO(gt, print_function=quiet)
    if not detections:
        return 0.0, 0.0, None
    ev = fce.COCOeval_faster(coco_gt, coco_gt.loadRes(detections), "bbox", print_function=quiet)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0]), np.asarray(ev.eval["precision"])


def output_errors(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> list[dict[str, float]]:
    """Per output: max abs error and cosine similarity over all images (outputs matched by element count)."""
    result = []
    for i, ref in enumerate(a[0]):
        j = next((k for k, o in enumerate(b[0]) if o.size == ref.size), i)
        x = np.concatenate([r[i].ravel() for r in a])
        y = np.concatenate([r[j].ravel() for r in b])
        cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
        result.append({"output": i, "max_abs": float(np.abs(x - y).max()), "cosine": cos})
    return result


def agreement(a: ModelRun, b: ModelRun, iou: float = 0.5) -> float:
    """Share of the source's operating-point detections the converted model also finds (same class, IoU >= iou)."""
    total = hits = 0
    for src, conv in zip(a.operating, b.operating, strict=True):
        used: set[int] = set()
        for c, _, box in src:
            total += 1
            for k, (c2, _, box2) in enumerate(conv):
                if k not in used and c2 == c and _iou(box, box2) >= iou:
                    used.add(k)
                    hits += 1
                    break
    return hits / total if total else 1.0


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
