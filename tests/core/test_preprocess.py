"""Preprocessing writes exactly what a naive reference computes, in place, for every input kind."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.decoders.base import TensorInfo
from agent.errors import ManifestError
from agent.manifest import ColorOrder, InputSpec, Layout, Normalization, ResizeMode, TensorDType
from agent.preprocess import Letterbox, Preprocessor
from agent.resize_pil import PilResizeCrop
from agent.sources.base import PixelFormat


def _frame(w: int = 640, h: int = 480, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reference(frame_bgr: np.ndarray, spec: InputSpec, tensor: TensorInfo) -> np.ndarray:
    """The straightforward (allocating) computation the in-place path must match."""
    geo = Letterbox.fit(frame_bgr.shape[1], frame_bgr.shape[0], spec.width, spec.height, spec.resize)
    canvas = np.full((spec.height, spec.width, 3), spec.pad_value, np.uint8)
    resized = cv2.resize(frame_bgr, (geo.inner_w, geo.inner_h), interpolation=cv2.INTER_LINEAR)
    canvas[geo.pad_y : geo.pad_y + geo.inner_h, geo.pad_x : geo.pad_x + geo.inner_w] = resized
    if spec.color is ColorOrder.RGB:
        canvas = canvas[:, :, ::-1]
    x = (canvas.astype(np.float64) - np.array(spec.normalization.mean)) / np.array(spec.normalization.std)
    if tensor.dtype != np.float32:
        info = np.iinfo(tensor.dtype)
        x = np.clip(np.round(x / tensor.scale + tensor.zero_point), info.min, info.max)
    x = x.astype(tensor.dtype)
    if spec.layout is Layout.NCHW:
        x = x.transpose(2, 0, 1)
    return x[None]


CASES = [
    # (layout, dtype, scale, zero_point, normalization, color)
    ("NHWC", "uint8", 1 / 255, 0, Normalization(), ColorOrder.RGB),  # identity: the direct path
    ("NHWC", "uint8", 1 / 255, 0, Normalization(), ColorOrder.BGR),
    ("NHWC", "int8", 1 / 255, -128, Normalization(), ColorOrder.RGB),
    ("NHWC", "float32", 0.0, 0, Normalization(), ColorOrder.RGB),
    ("NCHW", "float32", 0.0, 0, Normalization(mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4)), ColorOrder.RGB),
    ("NCHW", "uint8", 1 / 255, 0, Normalization(), ColorOrder.RGB),
    ("NHWC", "int8", 0.0078125, 0, Normalization(mean=(127.5,) * 3, std=(127.5,) * 3), ColorOrder.RGB),
]


@pytest.mark.parametrize(("layout", "dtype", "scale", "zp", "norm", "color"), CASES)
@pytest.mark.parametrize(("fw", "fh"), [(640, 480), (480, 640), (256, 256)])
def test_in_place_matches_reference(layout, dtype, scale, zp, norm, color, fw, fh) -> None:
    spec = InputSpec(width=256, height=256, layout=Layout(layout), dtype=TensorDType(dtype), color=color, normalization=norm)
    tensor = TensorInfo("input", spec.tensor_shape(), np.dtype(dtype), scale, zp)
    dst = np.zeros(spec.tensor_shape(), np.dtype(dtype))
    frame = _frame(fw, fh)
    pre = Preprocessor(spec, tensor)
    pre.write(frame, PixelFormat.BGR, fw, fh, dst)
    pre.write(_frame(fw, fh, seed=1), PixelFormat.BGR, fw, fh, dst)  # a second frame overwrites the first fully
    expected = _reference(_frame(fw, fh, seed=1), spec, tensor)
    diff = np.abs(dst.astype(np.float64) - expected.astype(np.float64))
    tol = 1e-5 if dtype == "float32" else 1
    assert diff.max() <= tol, f"max diff {diff.max()}"


def test_rgb_frames_need_no_swap_for_rgb_models() -> None:
    spec = InputSpec(width=64, height=64, dtype=TensorDType.uint8)
    tensor = TensorInfo("in", spec.tensor_shape(), np.dtype(np.uint8), 1 / 255, 0)
    dst = np.zeros(spec.tensor_shape(), np.uint8)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB order
    Preprocessor(spec, tensor).write(rgb, PixelFormat.RGB, 64, 64, dst)
    assert (dst[0, ..., 0] == 200).all() and (dst[0, ..., 2] == 0).all()


def test_yuv420_frames_are_converted() -> None:
    bgr = _frame(256, 256)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    spec = InputSpec(width=256, height=256, dtype=TensorDType.uint8)
    tensor = TensorInfo("in", spec.tensor_shape(), np.dtype(np.uint8), 1 / 255, 0)
    dst = np.zeros(spec.tensor_shape(), np.uint8)
    Preprocessor(spec, tensor).write(yuv, PixelFormat.YUV420, 256, 256, dst)
    expected = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
    assert np.array_equal(dst[0], expected)
    # a YUV frame of another size is converted, then resized
    Preprocessor(spec, tensor).write(cv2.cvtColor(_frame(320, 240), cv2.COLOR_BGR2YUV_I420), PixelFormat.YUV420, 320, 240, dst)


def test_letterbox_round_trip() -> None:
    for fw, fh, mode in [(640, 480, ResizeMode.letterbox), (480, 640, ResizeMode.letterbox), (1920, 1080, ResizeMode.stretch)]:
        geo = Letterbox.fit(fw, fh, 320, 320, mode)
        boxes = np.array([[10, 20, 200, 300], [0, 0, fw, fh]], np.float32)
        back = geo.input_norm_to_frame(geo.frame_to_input_norm(boxes))
        assert np.allclose(back, boxes, atol=1e-3)


def test_letterbox_maps_padding_correctly() -> None:
    geo = Letterbox.fit(640, 480, 320, 320, ResizeMode.letterbox)
    assert (geo.inner_w, geo.inner_h, geo.pad_x, geo.pad_y) == (320, 240, 0, 40)
    # the top-left of the image area in the input is the frame origin
    pix = geo.input_norm_to_frame(np.array([[0.0, 40 / 320, 1.0, 280 / 320]], np.float32))
    assert np.allclose(pix, [[0, 0, 640, 480]], atol=1e-3)
    # boxes in the padding clip to the frame
    assert np.allclose(geo.input_norm_to_frame(np.array([[0.0, 0.0, 0.1, 0.1]], np.float32))[0, 1::2], [0, 0])


def test_manifest_input_must_match_tensor() -> None:
    spec = InputSpec(width=256, height=256)
    with pytest.raises(ManifestError, match=r"shape \[1, 256, 256, 3\].*\[1, 320, 320, 3\]"):
        Preprocessor(spec, TensorInfo("images", (1, 320, 320, 3), np.dtype(np.float32)))
    with pytest.raises(ManifestError, match="dtype float32 does not match"):
        Preprocessor(spec, TensorInfo("images", (1, 256, 256, 3), np.dtype(np.uint8), 1 / 255, 0))


def test_steady_state_allocates_no_frame_sized_array() -> None:
    import tracemalloc

    spec = InputSpec(width=256, height=256, layout=Layout.NCHW)
    tensor = TensorInfo("in", spec.tensor_shape(), np.dtype(np.float32))
    dst = np.zeros(spec.tensor_shape(), np.float32)
    pre = Preprocessor(spec, tensor)
    frame = _frame()
    pre.write(frame, PixelFormat.BGR, 640, 480, dst)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(20):
        pre.write(frame, PixelFormat.BGR, 640, 480, dst)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert peak < 64 * 1024, f"{peak} bytes allocated (a model-sized float input is {dst.nbytes})"


def test_center_crop_keeps_the_middle_and_maps_back() -> None:
    """Centre crop (Ultralytics classify): short side to the input (Pillow's antialiased bilinear), middle kept."""
    geo = Letterbox.fit(640, 480, 224, 224, ResizeMode.center_crop)  # resized to 298x224, 37 px cut on the left
    assert geo.crop_y == 0 and geo.crop_h == 480 and geo.crop_x == pytest.approx(37 * 640 / 298)
    whole = geo.input_norm_to_frame(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32))
    np.testing.assert_allclose(geo.frame_to_input_norm(whole), [[0, 0, 1, 1]], atol=1e-6)
    spec = InputSpec(width=224, height=224, layout=Layout.NCHW, resize=ResizeMode.center_crop)
    tensor = TensorInfo("input", spec.tensor_shape(), np.dtype(np.float32))
    frame = _frame(640, 480)
    dst = np.zeros(spec.tensor_shape(), np.float32)
    Preprocessor(spec, tensor).write(frame, PixelFormat.BGR, 640, 480, dst)
    crop = np.zeros((224, 224, 3), np.uint8)
    PilResizeCrop(640, 480, 224, 224, 3).resize(frame, crop)
    np.testing.assert_allclose(dst[0], crop[:, :, ::-1].transpose(2, 0, 1) / 255.0, atol=1e-6)
    # a YUV frame is converted whole, then cropped: same picture as the BGR path (smooth, so 4:2:0 chroma loses little)
    smooth = cv2.resize(_frame(16, 12), (640, 480), interpolation=cv2.INTER_CUBIC)
    bgr, yuv = np.zeros_like(dst), np.zeros_like(dst)
    Preprocessor(spec, tensor).write(smooth, PixelFormat.BGR, 640, 480, bgr)
    Preprocessor(spec, tensor).write(cv2.cvtColor(smooth, cv2.COLOR_BGR2YUV_I420), PixelFormat.YUV420, 640, 480, yuv)
    assert np.abs(yuv - bgr).mean() < 0.02


def test_letterbox_warp_is_one_corner_aligned_warp_with_float_padding() -> None:
    """MediaPipe's letterbox: x_src = x_dst / scale + x0 with x0 possibly fractional, border = pad value."""
    geo = Letterbox.fit(640, 480, 128, 128, ResizeMode.letterbox_warp)
    assert geo.warp and geo.scale_x == 0.2 and (geo.crop_x, geo.crop_y) == (0.0, -80.0)
    frame_box = np.array([[100.0, 50.0, 300.0, 400.0]], np.float32)
    np.testing.assert_allclose(geo.input_norm_to_frame(geo.frame_to_input_norm(frame_box)), frame_box, atol=1e-3)
    spec = InputSpec(width=128, height=128, resize=ResizeMode.letterbox_warp, pad_value=0)
    tensor = TensorInfo("input", spec.tensor_shape(), np.dtype(np.float32))
    frame = _frame(640, 480)
    dst = np.zeros(spec.tensor_shape(), np.float32)
    Preprocessor(spec, tensor).write(frame, PixelFormat.BGR, 640, 480, dst)
    matrix = np.array([[0.2, 0, 0], [0, 0.2, 16.0]])  # 480 * 0.2 = 96 rows, centred: 16 above and below
    expected = cv2.warpAffine(frame, matrix, (128, 128), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))[:, :, ::-1]
    np.testing.assert_allclose(dst[0], expected / 255.0, atol=1e-6)
    assert not dst[0, :16].any() and not dst[0, -16:].any()
