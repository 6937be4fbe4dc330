"""Synthetic data for the demo detector: camera-sized scenes, letterboxed the way the agent does it.

Every scene is rendered at 640x480 by ``agent.sources.scenes.random_scene`` and letterboxed to the
model input exactly like the agent's preprocessing (INTER_LINEAR, centred, pad 114, BGR->RGB).
Images are kept as uint8 RGB; dividing by 255 (manifest normalization std 255) happens per batch.
Each scene has its own generator seeded with ``(seed, index)``, so a set is identical whatever the
number of worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import cv2
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agent.sources.scenes import CLASSES, GroundTruth, random_scene

FRAME_W, FRAME_H = 640, 480
PAD_VALUE = 114
MAX_OBJECTS = 5  # random_scene's default max_objects
_CHUNK = 64


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where a frame lands inside the model input: ``input = frame * scale + (left, top)``."""

    scale: float
    left: int
    top: int
    new_w: int
    new_h: int
    in_w: int
    in_h: int


def letterbox_geometry(frame_w: int, frame_h: int, in_w: int, in_h: int) -> Letterbox:
    scale = min(in_w / frame_w, in_h / frame_h)
    new_w, new_h = round(frame_w * scale), round(frame_h * scale)
    return Letterbox(scale, (in_w - new_w) // 2, (in_h - new_h) // 2, new_w, new_h, in_w, in_h)


def letterbox_rgb(frame_bgr: np.ndarray, lb: Letterbox, out: np.ndarray | None = None) -> np.ndarray:
    """Letterbox a BGR frame into an RGB ``in_h x in_w x 3`` uint8 array (``out`` if given)."""
    if out is None:
        out = np.empty((lb.in_h, lb.in_w, 3), np.uint8)
    out[...] = PAD_VALUE
    view = out[lb.top : lb.top + lb.new_h, lb.left : lb.left + lb.new_w]
    resized = cv2.resize(frame_bgr, (lb.new_w, lb.new_h), interpolation=cv2.INTER_LINEAR)
    cv2.cvtColor(resized, cv2.COLOR_BGR2RGB, dst=view)
    return out


@dataclass(slots=True)
class SceneSet:
    """Letterboxed scenes plus their ground truth, in model-input pixels and in frame pixels."""

    images: np.ndarray  # [N, H, W, 3] uint8 RGB, letterboxed
    boxes: np.ndarray  # [N, MAX_OBJECTS, 5] float32: class_id, x1, y1, x2, y2 in input px; class -1 = none
    truths: list[list[GroundTruth]]  # frame pixels, for COCO evaluation
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # original BGR frames kept on request

    def __len__(self) -> int:
        return len(self.images)


def _render_chunk(
    seed: int, start: int, stop: int, in_size: int, keep_frames: int
) -> tuple[int, np.ndarray, np.ndarray, list[list[GroundTruth]], dict[int, np.ndarray]]:
    cv2.setNumThreads(1)  # the pool already uses every core
    lb = letterbox_geometry(FRAME_W, FRAME_H, in_size, in_size)
    n = stop - start
    images = np.empty((n, in_size, in_size, 3), np.uint8)
    boxes = np.full((n, MAX_OBJECTS, 5), -1.0, np.float32)
    truths: list[list[GroundTruth]] = []
    frames: dict[int, np.ndarray] = {}
    for k, index in enumerate(range(start, stop)):
        frame, gts = random_scene(np.random.default_rng([seed, index]), FRAME_W, FRAME_H, max_objects=MAX_OBJECTS)
        letterbox_rgb(frame, lb, out=images[k])
        for j, gt in enumerate(gts):
            x1, y1, x2, y2 = gt.box
            boxes[k, j] = (gt.class_id, x1 * lb.scale + lb.left, y1 * lb.scale + lb.top,
                           x2 * lb.scale + lb.left, y2 * lb.scale + lb.top)
        truths.append(gts)
        if index < keep_frames:
            frames[index] = frame
    return start, images, boxes, truths, frames


def generate_scenes(
    count: int, seed: int, in_size: int, description: str, keep_frames: int = 0, workers: int | None = None
) -> SceneSet:
    """Render ``count`` scenes in parallel (with a progress bar) and letterbox them to ``in_size``.

    The first ``keep_frames`` original 640x480 frames are kept too (for the self-test set).
    """
    images = np.empty((count, in_size, in_size, 3), np.uint8)
    boxes = np.empty((count, MAX_OBJECTS, 5), np.float32)
    truths: list[list[GroundTruth]] = [[] for _ in range(count)]
    frames: dict[int, np.ndarray] = {}
    workers = workers or os.cpu_count() or 1
    with _progress() as progress, ProcessPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task(description, total=count)
        futures = [
            pool.submit(_render_chunk, seed, s, min(s + _CHUNK, count), in_size, keep_frames)
            for s in range(0, count, _CHUNK)
        ]
        for future in as_completed(futures):
            start, imgs, bxs, tr, fr = future.result()
            images[start : start + len(imgs)] = imgs
            boxes[start : start + len(imgs)] = bxs
            truths[start : start + len(imgs)] = tr
            frames.update(fr)
            progress.advance(task, len(imgs))
    return SceneSet(images, boxes, truths, frames)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches covering ``range(n)``; the last short batch is dropped."""
    order = rng.permutation(n)
    for s in range(0, n - batch_size + 1, batch_size):
        yield order[s : s + batch_size]


def coco_ground_truth(truths: list[list[GroundTruth]], file_names: list[str] | None = None) -> dict[str, object]:
    """COCO detection ground truth (bbox = x, y, w, h in frame pixels); image ids start at 1."""
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for i, gts in enumerate(truths):
        name = file_names[i] if file_names else f"{i:06d}.jpg"
        images.append({"id": i + 1, "file_name": name, "width": FRAME_W, "height": FRAME_H})
        for gt in gts:
            x1, y1, x2, y2 = gt.box
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": gt.class_id + 1,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0,
            })
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}
