"""Fixture builder (runs in the ``mediapipe`` reference venv): MediaPipe's own face detectors and their answers.

The mediapipe wheel ships the real BlazeFace models of its legacy face detection solution; this copies
them out unchanged and records what MediaPipe itself (``mp.solutions.face_detection``, the model's own
graph: its resize, [-1, 1] input, anchors, decoding and weighted NMS) finds on real photographs that
scikit-image ships: a face (the astronaut, also cropped to landscape and portrait so the letterbox
geometry matters, and shrunk onto a wide canvas for the full-range model) and faceless photos (a cat,
coffee, a motorcycle), which must give no face.

Writes ``--out``: the two .tflite files, ``images/*.png`` (RGB photos stored losslessly) and
``reference_short_range.json`` / ``reference_full_range.json`` in refs.py's layout, boxes in frame pixels.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
import skimage.data

# model_selection -> (name, file in the wheel, the graph's own score threshold). The graphs keep their built-in
# min_score_thresh whatever min_detection_confidence says (0.10.21: 0.1 and 0.85 give the same faces), 0.5 for
# short range and 0.6 for full range (an independent decode reproduces the full-range boxes only with 0.6).
MODELS = {
    0: ("short_range", "face_detection_short_range.tflite", 0.5),
    1: ("full_range", "face_detection_full_range_sparse.tflite", 0.6),
}


def _images() -> dict[str, np.ndarray]:
    """RGB uint8 photos: faces at several aspect ratios and scales, and photos without a face."""
    astronaut = skimage.data.astronaut()  # 512x512, one face in the upper middle
    small = cv2.resize(astronaut, (360, 360), interpolation=cv2.INTER_AREA)
    wide = np.full((450, 800, 3), 40, np.uint8)  # the face smaller and off-centre in a 16:9 frame
    wide[60:420, 400:760] = small
    grey = skimage.data.camera()
    return {
        "astronaut": astronaut,
        "astronaut_landscape": np.ascontiguousarray(astronaut[16:400]),  # 512x384
        "astronaut_portrait": np.ascontiguousarray(astronaut[:, 80:400]),  # 320x512
        "astronaut_strip": np.ascontiguousarray(astronaut[40:341]),  # 512x301: the letterbox border is fractional
        "astronaut_far": wide,
        "two_faces": np.ascontiguousarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)),  # 1024x512
        "cameraman": np.ascontiguousarray(np.stack([grey] * 3, axis=-1)),
        "cat": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "motorcycle": skimage.data.stereo_motorcycle()[0],
    }


def _detections(solution: object, rgb: np.ndarray) -> list[dict[str, object]]:
    height, width = rgb.shape[:2]
    result = solution.process(rgb)  # type: ignore[attr-defined]
    rows = []
    for det in result.detections or []:
        rel = det.location_data.relative_bounding_box
        box = [rel.xmin * width, rel.ymin * height, (rel.xmin + rel.width) * width, (rel.ymin + rel.height) * height]
        rows.append({"box": [float(v) for v in box], "class_id": 0, "score": float(det.score[0])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    package = Path(mp.__file__).parent / "modules" / "face_detection"
    images = _images()
    (out / "images").mkdir(parents=True, exist_ok=True)
    for name, rgb in images.items():
        cv2.imwrite(str(out / "images" / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    for selection, (name, filename, threshold) in MODELS.items():
        shutil.copyfile(package / filename, out / filename)
        with mp.solutions.face_detection.FaceDetection(min_detection_confidence=threshold, model_selection=selection) as fd:
            # Read back from the PNG, so the reference sees exactly the pixels the agent will.
            answers = {
                f"{image}.png": {
                    "detections": _detections(fd, cv2.imread(str(out / "images" / f"{image}.png"))[:, :, ::-1].copy())
                }
                for image in images
            }
        reference = {"threshold": threshold, "model": filename, "mediapipe": mp.__version__, "images": answers}
        (out / f"reference_{name}.json").write_text(json.dumps(reference, indent=1))
        found = {k: [round(d["score"], 3) for d in v["detections"]] for k, v in answers.items()}
        print(name, json.dumps(found))


if __name__ == "__main__":
    main()
