"""Fixtures of the format cases: each builds (once, cached by refs.build_fixture) its models and the reference answers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.conformance import refs

HERE = Path(__file__).resolve().parent
SCENES = refs.REPO / "agent" / "sources" / "scenes.py"


def build(name: str, env: str, builder: str, *args: str, inputs: tuple[Path, ...] = ()) -> Path:
    """refs.build_fixture with the build time printed (``pytest -s`` shows cold and warm times)."""
    start = time.perf_counter()
    out = refs.build_fixture(name, refs.ref_python(env), HERE / builder, *args, inputs=inputs)
    print(f"\n[{name}] fixture ready in {time.perf_counter() - start:.1f} s: {out}")
    return out


def load_reference(folder: Path, filename: str = "reference.json") -> dict[str, Any]:
    return json.loads((folder / filename).read_text())


def read_image(folder: Path, name: str) -> np.ndarray:
    """A fixture image as the agent gets frames (BGR uint8)."""
    image = cv2.imread(str(folder / "images" / name), cv2.IMREAD_COLOR)
    assert image is not None, f"fixture image {folder / 'images' / name} is missing or unreadable"
    return image


@pytest.fixture(scope="session")
def mediapipe_faces() -> Path:
    """MediaPipe's own face detection models (from its wheel) and its own answers on photographs."""
    return build("mediapipe-faces", "mediapipe", "build_mediapipe.py")


@pytest.fixture(scope="session")
def ssd_postprocess() -> Path:
    """A TF SSD whose head feeds TFLite_Detection_PostProcess, converted by TF's converter (float and uint8)."""
    return build("ssd-postprocess", "convert", "build_ssd_postprocess.py", inputs=(SCENES,))


@pytest.fixture(scope="session")
def onnx_classifier() -> Path:
    """A torch classifier exported to ONNX with a dynamic batch axis, and onnxruntime's own answers."""
    return build("onnx-classifier", "convert", "build_onnx_classifier.py", inputs=(SCENES,))
