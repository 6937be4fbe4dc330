"""Shared fixtures: the bundled demo models (committed under models/demo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.backends.base import BackendOptions
from agent.demo import VARIANTS, demo_model_path
from agent.detector import Detector, load_detector

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_paths() -> dict[str, Path]:
    return {v: demo_model_path(v) for v in VARIANTS}


@pytest.fixture
def demo_detector() -> Detector:
    det = load_detector(demo_model_path("tflite-int8"), BackendOptions(threads=1))
    yield det
    det.close()
