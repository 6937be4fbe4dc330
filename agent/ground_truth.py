"""Labelled image folders as COCO-style ground truth, for the commands that score a model.

YOLO txt labels sit beside each image or in Ultralytics' layout (``.../images/x.jpg`` ->
``.../labels/x.txt``). ``edge-agent bench-compare`` and ``convert-to-tflite --validate`` both read
them here, so one folder scores the same way in both. Class ``k`` is COCO category ``k + 1``,
as in our manifests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def label_file(image: Path) -> Path:
    """YOLO labels beside the image, or in Ultralytics' layout (the last ``images/`` folder -> ``labels/``)."""
    beside = image.with_suffix(".txt")
    parts = image.parts
    if beside.is_file() or "images" not in parts[:-1]:
        return beside
    cut = len(parts) - 2 - parts[:-1][::-1].index("images")
    return Path(*parts[:cut], "labels", *parts[cut + 1 : -1], image.stem + ".txt")


def yolo_ground_truth(images: Sequence[tuple[Path, int, int]], labels: Sequence[str]) -> dict[str, Any]:
    """COCO-style ground truth of ``(image, width, height)`` entries (image ids 1..N in order) from their YOLO labels."""
    entries: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, (path, w, h) in enumerate(images, 1):
        entries.append({"id": i, "file_name": path.name, "width": w, "height": h})
        txt = label_file(path)
        for line in txt.read_text().splitlines() if txt.is_file() else []:
            c, cx, cy, bw, bh = (float(v) for v in line.split()[:5])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "iscrowd": 0,
                    "bbox": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h],
                    "area": bw * w * bh * h,
                }
            )
    return {"images": entries, "annotations": annotations, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(labels)]}
