"""``edge-agent detect``: one-shot inference on image files, one JSON result per line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2

from agent.annotate import draw_detections
from agent.detector import Detector
from agent.errors import SourceError
from agent.schema import still_image_result
from agent.sources.base import PixelFormat


def detect_images(detector: Detector, images: list[Path], annotate_dir: Path | None) -> int:
    """Detect on each image; unreadable files are reported on stderr and make the exit code 1."""
    if annotate_dir is not None:
        annotate_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for index, path in enumerate(images, start=1):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            print(f"{path}: not a readable image (missing, truncated or unsupported format)", file=sys.stderr)
            failures += 1
            continue
        height, width = image.shape[:2]
        start_ns, wall = time.monotonic_ns(), time.time()
        t0 = time.perf_counter_ns()
        geo = detector.preprocess(image, PixelFormat.BGR, width, height)
        t1 = time.perf_counter_ns()
        detector.invoke()
        t2 = time.perf_counter_ns()
        detections = detector.decode(geo)
        t3 = time.perf_counter_ns()
        result = still_image_result(
            frame_id=index,
            source_id=path.name,
            image_size=(width, height),
            model=detector.ref,
            task=detector.task.value,
            detections=detections,
            captured=(start_ns, wall),
            stage_ns=(t0, t1, t2, t3),
        )
        print(result.model_dump_json(), flush=True)
        if annotate_dir is not None:
            out = annotate_dir / f"{path.stem}.annotated.jpg"
            if not cv2.imwrite(str(out), draw_detections(image, detections)):
                raise SourceError(f"cannot write {out} (is {annotate_dir} writable and not full?)")
    return 1 if failures else 0
