"""A bare model's manifest, field by field: metadata > family convention > quantization > guess, with sources."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.bare_manifest import describe_bare, parse_input_size
from agent.decoders.base import TensorInfo
from agent.model_metadata import ModelMetadata
from agent.preprocess import Preprocessor
from agent.sources.base import PixelFormat

CLASSES = TensorInfo("probs", (1, 10), np.dtype(np.float32))
MEDIAPIPE = [
    TensorInfo("regressors", (1, 896, 16), np.dtype(np.float32)),
    TensorInfo("classificators", (1, 896, 1), np.dtype(np.float32)),
]


def _nhwc(dtype: type, scale: float = 0.0, zero_point: int = 0, size: int = 64) -> TensorInfo:
    return TensorInfo("input", (1, size, size, 3), np.dtype(dtype), scale, zero_point)


def _written(tensor: TensorInfo, resolved_input: object, frame: np.ndarray) -> np.ndarray:
    dst = np.zeros(tensor.shape, tensor.dtype)
    Preprocessor(resolved_input, tensor).write(frame, PixelFormat.BGR, frame.shape[1], frame.shape[0], dst)  # type: ignore[arg-type]
    return dst[0]


def _frame(size: int = 64) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_quantized_input_takes_raw_pixels_even_with_metadata_normalization(dtype: type) -> None:
    """As LiteRT / TFLite Support do: a quantized input's scale and zero point define the float range."""
    scale, zp = (1 / 128, 128) if dtype is np.uint8 else (1 / 128, 0)
    tensor = _nhwc(dtype, scale, zp)
    meta = ModelMetadata(normalization=((127.5,) * 3, (127.5,) * 3), sources={"normalization": "TFLite metadata"})
    resolved = describe_bare(tensor, [CLASSES], Path("cls.tflite"), meta, None)
    assert resolved.sources["input.normalization"].startswith("input quantization")
    frame = _frame()
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).astype(np.int16)
    expected = rgb if dtype is np.uint8 else rgb - 128
    np.testing.assert_array_equal(_written(tensor, resolved.manifest.input, frame).astype(np.int16), expected)
    assert resolved.manifest.input.resize.value == "stretch_libyuv"  # TFLite classifier convention (Task Library)


def test_float_input_uses_metadata_normalization_over_family_convention() -> None:
    tensor = _nhwc(np.float32)
    meta = ModelMetadata(normalization=((127.5,) * 3, (127.5,) * 3), sources={"normalization": "TFLite metadata"})
    resolved = describe_bare(tensor, [CLASSES], Path("cls.tflite"), meta, None)
    assert resolved.sources["input.normalization"] == "model metadata (TFLite metadata)"
    written = _written(tensor, resolved.manifest.input, _frame())
    assert written.min() >= -1.0 and written.max() <= 1.0 and written.min() < -0.9


def test_mediapipe_outputs_bring_the_minus_one_to_one_convention() -> None:
    resolved = describe_bare(_nhwc(np.float32, size=128), MEDIAPIPE, Path("face.tflite"), ModelMetadata(), None)
    spec = resolved.manifest.input
    assert resolved.manifest.decoder.type == "ssd_anchors"
    assert spec.normalization.mean == (127.5,) * 3 and spec.normalization.std == (127.5,) * 3
    assert spec.pad_value == 0 and spec.resize.value == "letterbox_warp"
    assert "mediapipe" in resolved.sources["family"] and "mediapipe" in resolved.sources["input.normalization"]
    assert (resolved.manifest.thresholds.score, resolved.manifest.thresholds.iou) == (0.5, 0.3)  # the short-range graph's


def test_ultralytics_int8_tflite_quantizes_pixels_over_255_and_reads_normalized_boxes() -> None:
    tensor = TensorInfo("images", (1, 64, 64, 3), np.dtype(np.int8), 1 / 255, -128)
    head = TensorInfo("output0", (1, 6, 84), np.dtype(np.int8), 0.01, -128)
    meta = ModelMetadata(family="ultralytics", labels=("a", "b"), sources={"family": "metadata.json 'author'"})
    resolved = describe_bare(tensor, [head], Path("yolo.tflite"), meta, None)
    assert resolved.manifest.decoder.type == "yolov8" and resolved.manifest.decoder.boxes_normalized  # type: ignore[union-attr]
    assert resolved.manifest.input.normalization.std == (255.0,) * 3
    frame = _frame()
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).astype(np.int16)
    np.testing.assert_array_equal(_written(tensor, resolved.manifest.input, frame).astype(np.int16), rgb - 128)


def test_ultralytics_classifier_is_centre_cropped() -> None:
    meta = ModelMetadata(family="ultralytics", task="classify", sources={"family": "x", "task": "props 'task'"})
    resolved = describe_bare(TensorInfo("images", (1, 3, 32, 32), np.dtype(np.float32)), [CLASSES], Path("cls.onnx"), meta, None)
    assert resolved.manifest.input.resize.value == "center_crop"
    assert resolved.sources["task"] == "model metadata (props 'task')"


def test_guesses_are_labelled_as_guesses() -> None:
    resolved = describe_bare(
        TensorInfo("input", (1, 3, 32, 32), np.dtype(np.float32)), [CLASSES], Path("cls.onnx"), ModelMetadata(), None
    )
    assert resolved.sources["input.normalization"] == "guess (pixels / 255)"
    assert resolved.sources["labels"].startswith("guess") and resolved.manifest.labels[0] == "class0"


@pytest.mark.parametrize(("text", "size"), [("640", (640, 640)), ("640x480", (640, 480)), ("320,240", (320, 240))])
def test_input_size_argument(text: str, size: tuple[int, int]) -> None:
    assert parse_input_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "axb", "1x2x3"])
def test_bad_input_size_argument_says_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_input_size(text)


def test_classic_yolov5_outputs_take_detect_py_defaults() -> None:
    head = TensorInfo("output0", (1, 2000, 7), np.dtype(np.float32))  # [1, N, 5+C] with objectness
    resolved = describe_bare(
        TensorInfo("images", (1, 3, 64, 64), np.dtype(np.float32)), [head], Path("v5.onnx"), ModelMetadata(), None
    )
    assert resolved.manifest.decoder.type == "yolov5" and resolved.manifest.labels == ("class0", "class1")
    assert (resolved.manifest.thresholds.score, resolved.manifest.thresholds.iou) == (0.25, 0.45)
    assert resolved.manifest.input.pad_value == 114 and resolved.sources["input.normalization"] == "family convention: yolov5"


def test_classifiers_report_their_top_classes_unfiltered() -> None:
    tensor = TensorInfo("input", (1, 64, 64, 3), np.dtype(np.float32))
    tflite = describe_bare(tensor, [CLASSES], Path("cls.tflite"), ModelMetadata(), None)
    assert tflite.manifest.thresholds.score == 0.0 and "top-5" in tflite.sources["thresholds"]
    unknown = describe_bare(tensor, [CLASSES], Path("cls.onnx"), ModelMetadata(), None)
    assert unknown.manifest.thresholds.score == 0.0 and unknown.sources["thresholds"].startswith("guess")


def test_a_declared_input_range_defines_the_normalization() -> None:
    """TFLite metadata stats (min/max) without NormalizationOptions: pixels 0..255 map linearly onto the range."""
    meta = ModelMetadata(input_range=(-1.0, 1.0), color_space="RGB", sources={"input_range": "stats", "color_space": "props"})
    resolved = describe_bare(_nhwc(np.float32), [CLASSES], Path("cls.onnx"), meta, None)
    assert (
        resolved.manifest.input.normalization.mean == (127.5,) * 3 and resolved.manifest.input.normalization.std == (127.5,) * 3
    )
    assert resolved.sources["input.normalization"] == "model metadata (stats)"
    assert resolved.sources["input.color"] == "model metadata (props)"


SSD_OUTPUTS = [
    TensorInfo("boxes", (1, 10, 4), np.dtype(np.float32)),
    TensorInfo("classes", (1, 10), np.dtype(np.float32)),
    TensorInfo("scores", (1, 10), np.dtype(np.float32)),
    TensorInfo("count", (1,), np.dtype(np.float32)),
]


def test_tflite_detection_postprocess_ssd_is_stretched_and_minus_one_to_one() -> None:
    resolved = describe_bare(_nhwc(np.float32, size=96), SSD_OUTPUTS, Path("ssd.tflite"), ModelMetadata(), None)
    spec = resolved.manifest.input
    assert resolved.manifest.decoder.type == "ssd_postprocess" and spec.resize.value == "stretch"
    assert spec.normalization.mean == (127.5,) * 3 and "tf-object-detection" in resolved.sources["family"]
    quantized = describe_bare(_nhwc(np.uint8, 1 / 128, 128, size=96), SSD_OUTPUTS, Path("ssd.tflite"), ModelMetadata(), None)
    assert quantized.sources["input.normalization"].startswith("input quantization")
