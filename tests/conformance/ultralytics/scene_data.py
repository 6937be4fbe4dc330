"""Scenes from ``agent.sources.scenes`` written as a YOLO data set (images + labels) and as test images.

Shared by the training script and the fixture builders, which run in the Ultralytics reference venv
(numpy and OpenCV only, no agent runtime needed). Every scene has its own generator seeded with
``(seed, index)``, so a set is the same whatever order it is written in.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np


def _load_scenes() -> ModuleType:
    """``agent/sources/scenes.py`` by path: the package's __init__ pulls in pydantic, not in the reference venv."""
    path = Path(__file__).resolve().parents[3] / "agent" / "sources" / "scenes.py"
    spec = importlib.util.spec_from_file_location("edge_agent_scenes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


_scenes = _load_scenes()
CLASSES: tuple[str, ...] = _scenes.CLASSES
random_scene = _scenes.random_scene

FRAME_W, FRAME_H = 640, 480
# Seeds of the three disjoint sets: training, validation during training, held-out (conformance + mAP).
TRAIN_SEED, VAL_SEED, HELDOUT_SEED = 1301, 1302, 1303
# Frame sizes that exercise letterbox geometry: wide, tall, odd and smaller than the model input.
ODD_SIZES: tuple[tuple[int, int], ...] = ((1280, 360), (300, 700), (333, 251), (517, 389))


def yolo_label_lines(truths: list, width: int, height: int) -> list[str]:
    """YOLO label rows: ``class cx cy w h`` normalized to the frame."""
    rows = []
    for gt in truths:
        x1, y1, x2, y2 = gt.box
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        rows.append(f"{gt.class_id} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return rows


def write_split(root: Path, split: str, seed: int, count: int, quality: int = 95) -> list[Path]:
    """Render ``count`` 640x480 scenes into ``root/images/split`` (JPEG) and ``root/labels/split``."""
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        frame, truths = random_scene(np.random.default_rng([seed, index]), FRAME_W, FRAME_H)
        path = images / f"{split}_{index:05d}.jpg"
        cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        (labels / f"{split}_{index:05d}.txt").write_text("\n".join(yolo_label_lines(truths, FRAME_W, FRAME_H)) + "\n")
        paths.append(path)
    return paths


def write_dataset_yaml(root: Path, train: str, val: str) -> Path:
    """The Ultralytics data yaml for ``root`` (absolute path: nothing is looked up in a datasets dir)."""
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    path = root / "data.yaml"
    path.write_text(f"path: {root.resolve()}\ntrain: images/{train}\nval: images/{val}\nnames:\n{names}\n")
    return path


def write_probe_images(folder: Path, seed: int, scenes: int = 3) -> list[Path]:
    """Test images: ``scenes`` camera-sized scenes (JPEG and PNG) plus one scene per odd frame size (PNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    sizes = [(FRAME_W, FRAME_H)] * scenes + list(ODD_SIZES)
    for index, (width, height) in enumerate(sizes):
        frame, _ = random_scene(np.random.default_rng([seed, index]), width, height)
        # JPEG for the first camera frames (what a camera source gives), lossless PNG for the rest
        suffix = ".jpg" if index < scenes - 1 else ".png"
        path = folder / f"probe_{index:02d}_{width}x{height}{suffix}"
        cv2.imwrite(str(path), frame)
        paths.append(path)
    return paths


__all__ = ["CLASSES", "HELDOUT_SEED", "TRAIN_SEED", "VAL_SEED", "write_dataset_yaml", "write_probe_images", "write_split"]
