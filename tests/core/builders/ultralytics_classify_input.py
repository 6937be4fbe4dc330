"""Ultralytics' own classifier preprocessing (``classify_transforms``) on a few frames (ultralytics venv).

Usage: ``ultralytics_classify_input.py --out DIR``. Writes ``<name>.png`` frames and ``<name>.npy``, the
CHW float tensor Ultralytics' ``ClassificationPredictor`` feeds the model for that frame (BGR -> RGB, PIL,
``Resize(short side)`` + ``CenterCrop``, /255).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from ultralytics.data.augment import classify_transforms

SIZE = 96
FRAMES = {"vga": (640, 480), "wide": (1280, 360), "odd": (333, 251), "tall": (300, 700), "small": (80, 60)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = Path(parser.parse_args().out)
    rng = np.random.default_rng(7)
    transform = classify_transforms(SIZE)
    for name, (width, height) in FRAMES.items():
        # textured frames: smooth shapes plus noise, so resampling differences show
        base = cv2.resize(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8), (width, height))
        frame = np.clip(base.astype(np.int16) + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(out / f"{name}.png"), frame)
        frame = cv2.imread(str(out / f"{name}.png"))
        tensor = transform(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))).numpy()
        np.save(out / f"{name}.npy", tensor)
    print("wrote", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
