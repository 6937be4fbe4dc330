"""The TFLite-metadata classifier fixture: built once per toolchain/builder change, cached (see tests/conformance/refs.py).

Step 1 (converter venv, TensorFlow) builds ``float.tflite`` and ``uint8.tflite`` and the scene images; step 2
(tflite-support venv) writes the metadata with tflite-support's image-classifier writer and records the Task
Library ImageClassifier's answers. Both steps skip (or fail under CI) when their venv is missing.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conformance.refs import build_fixture, ref_python

HERE = Path(__file__).resolve().parent
KINDS = ("float", "uint8")
SCENES = HERE.parents[2] / "agent" / "sources" / "scenes.py"


@functools.cache
def classifier_fixture() -> Path:
    """Folder with ``<kind>_metadata.tflite``, ``<kind>_writer_metadata.json``, labels.txt, images/, reference.json."""
    models = build_fixture(
        "metadata-classifier-models",
        os.environ.get("EDGE_AGENT_CONVERT_PYTHON") or ref_python("convert"),
        HERE / "build_classifier.py",
        inputs=[SCENES],
    )
    return build_fixture(
        "metadata-classifier", ref_python("tflite_support"), HERE / "write_metadata.py", "--models", str(models), inputs=[models]
    )


def reference() -> dict[str, Any]:
    """The Task Library's answers (``reference.json``)."""
    return json.loads((classifier_fixture() / "reference.json").read_text())


@functools.cache
def ultralytics_exports() -> Path:
    """Folder with Ultralytics' own ONNX exports (``<case>.onnx``) and its reading of their metadata (expected.json)."""
    return build_fixture("metadata-ultralytics", ref_python("ultralytics"), HERE / "build_ultralytics_exports.py")


MEDIAPIPE_MODELS = (
    "face_detection/face_detection_short_range.tflite",
    "face_detection/face_detection_full_range_sparse.tflite",
    "hand_landmark/hand_landmark_full.tflite",
    "palm_detection/palm_detection_full.tflite",
    "selfie_segmentation/selfie_segmentation.tflite",
    "face_landmark/face_landmark.tflite",
)


@functools.cache
def mediapipe_models_displayed() -> Path:
    """Google's MediaPipe models (shipped in the mediapipe wheel) with tflite-support's reading of their metadata."""
    python = ref_python("mediapipe")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    models = [Path(site) / "mediapipe" / "modules" / name for name in MEDIAPIPE_MODELS]
    return build_fixture(
        "metadata-mediapipe", ref_python("tflite_support"), HERE / "display_metadata.py", *map(str, models), inputs=models
    )


@functools.cache
def ssd_with_metadata() -> Path:
    """The SSD format case's models (tests/conformance/formats, same cache entry) with object-detector metadata."""
    convert = os.environ.get("EDGE_AGENT_CONVERT_PYTHON") or ref_python("convert")
    formats = HERE.parent / "formats"
    ssd = build_fixture("ssd-postprocess", convert, formats / "build_ssd_postprocess.py", inputs=[SCENES])
    return build_fixture(
        "metadata-ssd", ref_python("tflite_support"), HERE / "write_detector_metadata.py", "--ssd", str(ssd), inputs=[ssd]
    )
