"""The centre crop of Ultralytics classifiers: the agent writes the tensor Ultralytics' own preprocessing writes.

Oracle: ``ultralytics.data.augment.classify_transforms`` (torchvision on PIL) run in the ultralytics venv on the
same frames (cached fixture). Pillow's newest releases sometimes run their two passes in the other order, so
a pixel may differ by one level (1/255); nothing more.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.decoders.base import TensorInfo
from agent.manifest import InputSpec, Layout, ResizeMode
from agent.preprocess import Letterbox, Preprocessor
from agent.sources.base import PixelFormat
from tests.conformance.refs import build_fixture, ref_python

pytestmark = pytest.mark.slow
BUILDER = Path(__file__).parent / "builders" / "ultralytics_classify_input.py"


@pytest.fixture(scope="module")
def frames() -> Path:
    return build_fixture("ultralytics-classify-input", ref_python("ultralytics"), BUILDER, timeout=900)


@pytest.mark.parametrize("name", ["vga", "wide", "odd", "tall", "small"])
def test_center_crop_writes_ultralytics_classify_input(frames: Path, name: str) -> None:
    expected = np.load(frames / f"{name}.npy")
    frame = cv2.imread(str(frames / f"{name}.png"))
    spec = InputSpec(width=96, height=96, layout=Layout.NCHW, resize=ResizeMode.center_crop)
    dst = np.zeros(spec.tensor_shape(), np.float32)
    Preprocessor(spec, TensorInfo("images", spec.tensor_shape(), np.dtype(np.float32))).write(
        frame, PixelFormat.BGR, frame.shape[1], frame.shape[0], dst
    )
    levels = np.abs(dst[0] - expected) * 255
    assert levels.max() <= 1.0 + 1e-3 and levels.mean() < 0.2, (name, float(levels.max()), float(levels.mean()))
    wrong = cv2.resize(frame, (96, 96), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].transpose(2, 0, 1) / 255.0
    assert np.abs(wrong - expected).max() * 255 > 5  # a plain stretch is visibly not what Ultralytics feeds


def test_center_crop_geometry_maps_boxes_back_to_the_kept_region() -> None:
    geo = Letterbox.fit(640, 480, 96, 96, ResizeMode.center_crop)  # resized to 128x96, 16 px cut each side
    np.testing.assert_allclose(geo.input_norm_to_frame(np.array([[0, 0, 1, 1]], np.float32)), [[80, 0, 560, 480]], atol=1e-3)
