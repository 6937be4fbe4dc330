"""Evaluate exported demo models with the device runtimes (LiteRT, ONNX Runtime), never torch.

Decoding is our own numpy (YOLOv8 layout, normalized boxes, class-aware NMS) mapped back through
the letterbox to 640x480 frame pixels; mAP comes from faster-coco-eval on COCO-style dicts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from _demo_data import FRAME_H, FRAME_W, SceneSet, coco_ground_truth, letterbox_geometry, letterbox_rgb
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

MAP_SCORE_THRESHOLD = 0.01  # low, so the precision/recall curve reaches high recall
MAP_MAX_DETECTIONS = 100


@dataclass(frozen=True, slots=True)
class TensorDescription:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.scale is not None:
            d |= {"scale": self.scale, "zero_point": self.zero_point}
        return d


class TFLiteRunner:
    """One LiteRT interpreter; feeds letterboxed RGB uint8 frames, returns dequantized ``[4+C, N]``."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interp = Interpreter(model_path=str(path), num_threads=threads)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self.nhwc = self._in["shape"][-1] == 3
        self.in_scale, self.in_zp = self._in["quantization"]
        self.out_scale, self.out_zp = self._out["quantization"]

    def describe(self) -> tuple[TensorDescription, TensorDescription]:
        return _describe_litert(self._in), _describe_litert(self._out)

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        x = rgb if self.nhwc else rgb.transpose(2, 0, 1)
        dtype = self._in["dtype"]
        if dtype == np.float32:
            x = x.astype(np.float32) / 255.0
        elif not (abs(self.in_scale * 255.0 - 1.0) < 1e-6 and self.in_zp == 0 and dtype == np.uint8):
            # generic (de)quantization; the demo int8 model takes camera bytes as they are (scale 1/255, zp 0)
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / 255.0 / self.in_scale + self.in_zp), info.min, info.max).astype(dtype)
        self._interp.set_tensor(self._in["index"], x[None])
        t0 = time.perf_counter()
        self._interp.invoke()
        ms = (time.perf_counter() - t0) * 1000.0
        y = self._interp.get_tensor(self._out["index"])[0]
        if y.dtype != np.float32:
            y = (y.astype(np.float32) - self.out_zp) * self.out_scale
        return y, ms


def _describe_litert(detail: dict) -> TensorDescription:
    scale, zp = detail["quantization"]
    quantized = detail["dtype"] != np.float32
    return TensorDescription(detail["name"], tuple(int(v) for v in detail["shape"]), np.dtype(detail["dtype"]).name,
                             float(scale) if quantized else None, int(zp) if quantized else None)


class OnnxRunner:
    """One ONNX Runtime CPU session with a float NCHW input in 0..1."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._in = self._sess.get_inputs()[0]
        self._out = self._sess.get_outputs()[0]

    def describe(self) -> tuple[TensorDescription, TensorDescription]:
        def d(t) -> TensorDescription:  # an onnxruntime NodeArg; "tensor(float)" -> "float32" like numpy
            onnx_type = t.type.removeprefix("tensor(").removesuffix(")")
            return TensorDescription(t.name, tuple(t.shape), _ONNX_DTYPES.get(onnx_type, onnx_type))

        return d(self._in), d(self._out)

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        x = (rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
        t0 = time.perf_counter()
        y = self._sess.run([self._out.name], {self._in.name: x})[0]
        return y[0], (time.perf_counter() - t0) * 1000.0


Runner = Callable[[np.ndarray], tuple[np.ndarray, float]]
_ONNX_DTYPES = {"float": "float32", "double": "float64", "float16": "float16", "uint8": "uint8", "int8": "int8"}


def nms_class_aware(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS within each class (boxes xyxy), best score first."""
    offset = boxes + (classes.astype(np.float32) * 4096.0)[:, None]  # classes never overlap each other
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(offset[i, 0], offset[rest, 0])
        yy1 = np.maximum(offset[i, 1], offset[rest, 1])
        xx2 = np.minimum(offset[i, 2], offset[rest, 2])
        yy2 = np.minimum(offset[i, 3], offset[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area_i = (offset[i, 2] - offset[i, 0]) * (offset[i, 3] - offset[i, 1])
        area_r = (offset[rest, 2] - offset[rest, 0]) * (offset[rest, 3] - offset[rest, 1])
        order = rest[inter / (area_i + area_r - inter + 1e-9) <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode(output: np.ndarray, in_w: int, in_h: int, score: float, iou: float,
           max_det: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[4+C, N]`` (normalized cxcywh + class scores) -> xyxy boxes in input pixels, scores, class ids."""
    cls_scores = output[4:]
    classes = cls_scores.argmax(0)
    conf = cls_scores[classes, np.arange(cls_scores.shape[1])]
    mask = conf >= score
    cx, cy, w, h = output[0, mask] * in_w, output[1, mask] * in_h, output[2, mask] * in_w, output[3, mask] * in_h
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    keep = nms_class_aware(boxes, conf[mask], classes[mask], iou)[:max_det]
    return boxes[keep], conf[mask][keep], classes[mask][keep]


def to_frame(boxes: np.ndarray, in_w: int, in_h: int) -> np.ndarray:
    """Map input-pixel xyxy boxes back through the letterbox to 640x480 frame pixels."""
    lb = letterbox_geometry(FRAME_W, FRAME_H, in_w, in_h)
    out = (boxes - np.array([lb.left, lb.top, lb.left, lb.top], np.float32)) / lb.scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, FRAME_W)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, FRAME_H)
    return out


def coco_map(gt: dict[str, object], detections: list[dict[str, object]]) -> tuple[float, float]:
    """(mAP@0.5, mAP@0.5:0.95) with faster-coco-eval."""
    from faster_coco_eval import COCO, COCOeval_faster

    quiet = logging.getLogger("faster_coco_eval").debug
    coco_gt = COCO(gt, print_function=quiet)
    if not detections:
        return 0.0, 0.0
    coco_dt = coco_gt.loadRes(detections)
    ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=quiet)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])


@dataclass(frozen=True, slots=True)
class EvalResult:
    map50: float
    map50_95: float
    mean_invoke_ms: float
    precision: float  # at the manifest's operating score threshold, IoU 0.5
    recall: float
    images: int

    def as_dict(self) -> dict[str, object]:
        return {"mAP50": round(self.map50, 4), "mAP50_95": round(self.map50_95, 4),
                "mean_invoke_ms": round(self.mean_invoke_ms, 3), "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "images": self.images}


def evaluate(runner: Runner, scenes: SceneSet, op_score: float, iou: float, description: str) -> EvalResult:
    """Run every scene through ``runner``; mAP over all scores >= 0.01, P/R at ``op_score``."""
    in_h, in_w = scenes.images.shape[1:3]
    detections: list[dict[str, object]] = []
    times: list[float] = []
    tp = fp = 0
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as p:
        task = p.add_task(description, total=len(scenes))
        for i in range(len(scenes)):
            output, ms = runner(scenes.images[i])
            times.append(ms)
            boxes, scores, classes = decode(output, in_w, in_h, MAP_SCORE_THRESHOLD, iou, MAP_MAX_DETECTIONS)
            boxes = to_frame(boxes, in_w, in_h)
            for b, s, c in zip(boxes, scores, classes, strict=True):
                detections.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                                   "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
            op = scores >= op_score
            hits = _match(boxes[op], classes[op], scenes.truths[i])
            tp, fp = tp + hits, fp + int(op.sum()) - hits
            p.advance(task)
    n_gt = sum(len(t) for t in scenes.truths)
    map50, map5095 = coco_map(coco_ground_truth(scenes.truths), detections)
    warm = times[min(5, len(times) - 1):]  # the first invokes pay for allocation and caches
    return EvalResult(map50, map5095, float(np.mean(warm)), tp / max(tp + fp, 1), tp / max(n_gt, 1), len(scenes))


def _match(boxes: np.ndarray, classes: np.ndarray, truths: list) -> int:
    """True positives at IoU 0.5, same class, each ground truth matched once (boxes sorted by score)."""
    used: set[int] = set()
    hits = 0
    for b, c in zip(boxes, classes, strict=True):
        for j, gt in enumerate(truths):
            if j in used or gt.class_id != int(c):
                continue
            g = gt.box
            iw = max(0.0, min(b[2], g[2]) - max(b[0], g[0]))
            ih = max(0.0, min(b[3], g[3]) - max(b[1], g[1]))
            inter = iw * ih
            union = (b[2] - b[0]) * (b[3] - b[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
            if inter / union >= 0.5:
                used.add(j)
                hits += 1
                break
    return hits


def write_selftest(scenes: SceneSet, folder: Path, count: int, budget_bytes: int) -> SceneSet:
    """Save ``count`` held-out frames as JPEG + COCO ``labels.json``; return them re-read and letterboxed.

    JPEG quality is lowered until the set fits ``budget_bytes`` (noisy backgrounds compress poorly).
    The returned set is what the agent will see, so the self-test numbers are measured on it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"scene_{i:02d}.jpg" for i in range(count)]
    for quality in (85, 75, 65, 55, 45, 35):
        blobs = [cv2.imencode(".jpg", scenes.frames[i], [cv2.IMWRITE_JPEG_QUALITY, quality])[1] for i in range(count)]
        if sum(b.nbytes for b in blobs) <= budget_bytes:
            break
    for old in folder.glob("scene_*.jpg"):
        old.unlink()
    for name, blob in zip(names, blobs, strict=True):
        (folder / name).write_bytes(blob.tobytes())
    labels = coco_ground_truth(scenes.truths[:count], names)
    labels["info"] = {"description": "edge-agent demo self-test frames (synthetic, agent.sources.scenes)",
                      "jpeg_quality": quality}
    (folder / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    in_size = scenes.images.shape[1]
    lb = letterbox_geometry(FRAME_W, FRAME_H, in_size, in_size)
    images = np.stack([letterbox_rgb(_read_jpeg(folder / n), lb) for n in names])
    return SceneSet(images, scenes.boxes[:count], scenes.truths[:count])


def _read_jpeg(path: Path) -> np.ndarray:
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise RuntimeError(f"cannot read back the self-test frame {path}")
    return frame
