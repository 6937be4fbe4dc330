"""The TFLite-metadata classifier fixture: built once per toolchain/builder change, cached (see tests/conformance/refs.py).

Step 1 (converter venv, TensorFlow) builds ``float.tflite`` and ``uint8.tflite`` and the scene images; step 2
(tflite-support venv) writes the metadata with tflite-support's image-classifier writer and records the Task
Library ImageClassifier's answers. Both steps skip (or fail under CI) when their venv is missing.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from tests.conformance.refs import build_fixture, ref_python

HERE = Path(__file__).resolve().parent
KINDS = ("float", "uint8")


@functools.cache
def classifier_fixture() -> Path:
    """Folder with ``<kind>_metadata.tflite``, ``<kind>_writer_metadata.json``, labels.txt, images/, reference.json."""
    models = build_fixture(
        "metadata-classifier-models",
        os.environ.get("EDGE_AGENT_CONVERT_PYTHON") or ref_python("convert"),
        HERE / "build_classifier.py",
        inputs=[HERE.parents[2] / "agent" / "sources" / "scenes.py"],
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
