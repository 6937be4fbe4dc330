"""Frame -> model input, written in place into the backend's input memory.

Fast path (uint8 NHWC input whose quantization maps pixel values to themselves): the
frame is resized straight into the input tensor and colour-swapped there. Every other
input (float, int8, per-channel normalization, NCHW) goes through one model-sized uint8
scratch image, then a per-channel lookup table (normalization and quantization folded
together) writes the final values into the input memory. Nothing frame-sized is
allocated per frame; scratch buffers are allocated once per frame geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.decoders.base import TensorInfo
from agent.errors import ManifestError
from agent.manifest import ColorOrder, InputSpec, Layout, ResizeMode
from agent.resize_libyuv import LibyuvBilinear
from agent.resize_pil import PilResizeCrop, crop_origin, short_side_size
from agent.sources.base import PixelFormat


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where a frame lands inside the model input, and the way back."""

    frame_w: int
    frame_h: int
    input_w: int
    input_h: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    inner_w: int
    inner_h: int

    #: the frame region the model sees (all of it except in centre-crop mode), in frame pixels; in warp
    #: mode the region grown to the input's aspect (float, may reach outside the frame)
    crop_x: float = 0
    crop_y: float = 0
    crop_w: float = 0
    crop_h: float = 0
    #: one affine warp maps the region onto the whole input (MediaPipe's letterbox)
    warp: bool = False

    @classmethod
    def fit(cls, frame_w: int, frame_h: int, input_w: int, input_h: int, mode: ResizeMode) -> Letterbox:
        if mode in (ResizeMode.stretch, ResizeMode.stretch_libyuv):
            return cls(
                frame_w,
                frame_h,
                input_w,
                input_h,
                input_w / frame_w,
                input_h / frame_h,
                0,
                0,
                input_w,
                input_h,
                0,
                0,
                frame_w,
                frame_h,
            )
        if mode is ResizeMode.letterbox_warp:
            # MediaPipe ImageToTensorCalculator: the frame's ROI grown to the input's aspect around its centre,
            # then one warp with corner-aligned sampling (x_src = x_dst / scale + x0), zero border
            scale = min(input_w / frame_w, input_h / frame_h)
            roi_w, roi_h = input_w / scale, input_h / scale
            return cls(
                frame_w, frame_h, input_w, input_h, scale, scale, 0, 0, input_w, input_h,
                (frame_w - roi_w) / 2, (frame_h - roi_h) / 2, roi_w, roi_h, warp=True,
            )  # fmt: skip
        if mode is ResizeMode.center_crop:
            # torchvision Resize(short side) + CenterCrop, as Ultralytics classifiers are fed: the region kept, in frame px
            resized_w, resized_h = short_side_size(frame_w, frame_h, min(input_w, input_h))
            sx, sy = resized_w / frame_w, resized_h / frame_h
            left, top = crop_origin(resized_w, resized_h, input_w, input_h)
            return cls(
                frame_w, frame_h, input_w, input_h, sx, sy, 0, 0, input_w, input_h, left / sx, top / sy,
                input_w / sx, input_h / sy,
            )  # fmt: skip
        scale = min(input_w / frame_w, input_h / frame_h)
        inner_w = min(input_w, max(1, round(frame_w * scale)))
        inner_h = min(input_h, max(1, round(frame_h * scale)))
        pad_x, pad_y = (input_w - inner_w) // 2, (input_h - inner_h) // 2
        return cls(
            frame_w,
            frame_h,
            input_w,
            input_h,
            inner_w / frame_w,
            inner_h / frame_h,
            pad_x,
            pad_y,
            inner_w,
            inner_h,
            0,
            0,
            frame_w,
            frame_h,
        )

    @property
    def cropped(self) -> bool:
        return (self.crop_w, self.crop_h) != (self.frame_w, self.frame_h)

    def input_norm_to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """(K,4) x1,y1,x2,y2 in 0..1 of the model input -> frame pixels, clipped to the frame."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] * self.input_w - self.pad_x) / self.scale_x + self.crop_x
        out[:, 1::2] = (boxes[:, 1::2] * self.input_h - self.pad_y) / self.scale_y + self.crop_y
        np.clip(out[:, 0::2], 0, self.frame_w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_h, out=out[:, 1::2])
        return out

    def frame_to_input_norm(self, boxes: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`input_norm_to_frame` (without clipping)."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = ((boxes[:, 0::2] - self.crop_x) * self.scale_x + self.pad_x) / self.input_w
        out[:, 1::2] = ((boxes[:, 1::2] - self.crop_y) * self.scale_y + self.pad_y) / self.input_h
        return out


_TO_RGB = {PixelFormat.BGR: cv2.COLOR_BGR2RGB, PixelFormat.GRAY: cv2.COLOR_GRAY2RGB, PixelFormat.YUV420: cv2.COLOR_YUV2RGB_I420}
_TO_BGR = {PixelFormat.RGB: cv2.COLOR_RGB2BGR, PixelFormat.GRAY: cv2.COLOR_GRAY2BGR, PixelFormat.YUV420: cv2.COLOR_YUV2BGR_I420}
_TO_GRAY = {PixelFormat.BGR: cv2.COLOR_BGR2GRAY, PixelFormat.RGB: cv2.COLOR_RGB2GRAY}


def to_bgr(image: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """A BGR copy of a frame (for snapshots; never on the per-frame path)."""
    return image.copy() if fmt is PixelFormat.BGR else cv2.cvtColor(image, _TO_BGR[fmt])


def _color_code(src: PixelFormat, dst: ColorOrder) -> int | None:
    if dst is ColorOrder.RGB:
        return None if src is PixelFormat.RGB else _TO_RGB[src]
    if dst is ColorOrder.BGR:
        return None if src is PixelFormat.BGR else _TO_BGR[src]
    if src is PixelFormat.GRAY:
        return None
    if src is PixelFormat.YUV420:
        return -1  # the Y plane is the grey image: slice, don't convert
    return _TO_GRAY[src]


class Preprocessor:
    """Writes frames into a model input array per the manifest's :class:`InputSpec`."""

    def __init__(self, spec: InputSpec, tensor: TensorInfo) -> None:
        self.spec = spec
        self.tensor = tensor
        expected = spec.tensor_shape()
        if tuple(tensor.shape) != expected:
            raise ManifestError(
                f"manifest input {spec.width}x{spec.height} {spec.layout.value} {spec.color.value} means tensor shape "
                f"{list(expected)}, but the model's input {tensor.name!r} has shape {list(tensor.shape)}"
            )
        if tensor.dtype != np.dtype(spec.dtype.value):
            raise ManifestError(
                f"manifest input dtype {spec.dtype.value} does not match the model's input {tensor.name!r} ({tensor.dtype})"
            )
        self.channels = spec.channels
        self._lut = self._build_lut()
        self._channel_luts = (
            [np.ascontiguousarray(self._lut[:, :, c]) for c in range(self.channels)] if self._lut is not None else []
        )
        self._direct = spec.layout is Layout.NHWC and tensor.dtype == np.uint8 and self._lut is None
        self._geometry: Letterbox | None = None
        self._key: tuple[int, int, PixelFormat] | None = None
        self._scratch: np.ndarray | None = None  # model-sized uint8, colour order of the model
        self._convert_buf: np.ndarray | None = None  # frame-sized, only when a conversion must precede the resize
        self._planes: list[np.ndarray] = []
        self._libyuv: LibyuvBilinear | None = None  # stretch_libyuv: built per frame geometry
        self._pil: PilResizeCrop | None = None  # center_crop: built per frame geometry

    def _build_lut(self) -> np.ndarray | None:
        """(1, 256, C) table: pixel value -> final input value (normalized, then quantized)."""
        pixels = np.arange(256, dtype=np.float64)
        mean = np.resize(np.asarray(self.spec.normalization.mean, np.float64), self.channels)
        std = np.resize(np.asarray(self.spec.normalization.std, np.float64), self.channels)
        values = (pixels[:, None] - mean[None, :]) / std[None, :]
        dtype = self.tensor.dtype
        if dtype == np.float32:
            return values.astype(np.float32)[None]
        info = np.iinfo(dtype)
        if self.tensor.scale:
            values = np.round(values / self.tensor.scale + self.tensor.zero_point)
        else:  # an integer input without quantization parameters takes raw pixels
            values = pixels[:, None].repeat(self.channels, 1) + (0 if dtype == np.uint8 else -128)
        table = np.clip(values, info.min, info.max).astype(dtype)[None]
        if dtype == np.uint8 and np.array_equal(table[0], np.arange(256)[:, None].repeat(self.channels, 1)):
            return None  # identity: raw camera bytes are already the input
        return table

    @property
    def geometry(self) -> Letterbox | None:
        return self._geometry

    def _prepare(self, width: int, height: int, fmt: PixelFormat) -> None:
        self._libyuv = None
        if self.spec.resize is ResizeMode.stretch_libyuv and (width, height) != (self.spec.width, self.spec.height):
            self._libyuv = LibyuvBilinear(width, height, self.spec.width, self.spec.height, self.channels)
        self._pil = None
        if self.spec.resize is ResizeMode.center_crop:
            self._pil = PilResizeCrop(width, height, self.spec.width, self.spec.height, self.channels)
        self._key = (width, height, fmt)
        self._geometry = Letterbox.fit(width, height, self.spec.width, self.spec.height, self.spec.resize)
        shape = (self.spec.height, self.spec.width) + ((self.channels,) if self.channels > 1 else ())
        self._scratch = np.full(shape, self.spec.pad_value, np.uint8)
        needs_resize = (width, height) != (self.spec.width, self.spec.height) or self._geometry.cropped or self._geometry.warp
        self._convert_buf = None
        if fmt is PixelFormat.YUV420 and needs_resize and self.channels == 3:
            self._convert_buf = np.empty((height, width, 3), np.uint8)
        elif self.channels == 1 and fmt in (PixelFormat.BGR, PixelFormat.RGB):
            self._convert_buf = np.empty((height, width), np.uint8)
        if self.channels > 1:
            self._planes = [np.empty(shape[:2], np.uint8) for _ in range(self.channels)]

    def write(self, frame_image: np.ndarray, fmt: PixelFormat, width: int, height: int, dst: np.ndarray) -> Letterbox:
        """Preprocess one frame into ``dst`` (the backend's input array); return its geometry."""
        if self._key != (width, height, fmt):
            self._prepare(width, height, fmt)
        geo = self._geometry
        assert geo is not None and self._scratch is not None
        if self._direct:
            target = dst[0]
            _fill_padding(target, geo, self.spec.pad_value)
        else:
            target = self._scratch
        roi = target[geo.pad_y : geo.pad_y + geo.inner_h, geo.pad_x : geo.pad_x + geo.inner_w]
        self._resize_convert(frame_image, fmt, roi, geo)
        if not self._direct:
            self._finish(dst)
        return geo

    def _resize_convert(self, image: np.ndarray, fmt: PixelFormat, roi: np.ndarray, geo: Letterbox) -> None:
        code = _color_code(fmt, self.spec.color)
        if geo.warp:
            self._warp_convert(image, fmt, roi, geo, code)
            return
        same_size = not geo.cropped and (geo.inner_w, geo.inner_h) == (geo.frame_w, geo.frame_h)
        interp = cv2.INTER_LINEAR
        if code == -1:  # grey model, YUV frame: the Y plane
            image, code = image[: geo.frame_h, : geo.frame_w], None
        if fmt is PixelFormat.YUV420 and code is not None:
            # colour conversion must see the whole I420 buffer; crop and resize afterwards if needed
            if same_size:
                cv2.cvtColor(image, code, dst=roi)
                return
            assert self._convert_buf is not None
            cv2.cvtColor(image, code, dst=self._convert_buf)
            self._resize(self._convert_buf, roi, geo, interp)
            return
        if code is not None and self.channels == 1:
            # to grey before resizing: smaller, and a 3->1 channel resize is impossible in place
            grey = cv2.cvtColor(image, code, dst=self._convert_buf)
            self._resize(grey, roi, geo, interp)
            return
        if same_size:
            np.copyto(roi, image)  # cv2.resize would copy too, at a cost
        else:
            self._resize(image, roi, geo, interp)
        if code is not None:
            cv2.cvtColor(roi, code, dst=roi)

    def _resize(self, src: np.ndarray, roi: np.ndarray, geo: Letterbox, interp: int) -> None:
        exact = self._libyuv or self._pil  # a reference's own resampling arithmetic, when the family has one
        if exact is None:
            cv2.resize(src, (geo.inner_w, geo.inner_h), dst=roi, interpolation=interp)
        elif src.ndim == 2:  # grey: one channel, as views
            exact.resize(src[:, :, None], roi[:, :, None])
        else:
            exact.resize(src, roi)

    def _warp_convert(self, image: np.ndarray, fmt: PixelFormat, target: np.ndarray, geo: Letterbox, code: int | None) -> None:
        """Letterbox by one affine warp of the whole frame onto the whole input (border = pad value)."""
        if code == -1:  # grey model, YUV frame: the Y plane
            image, code = image[: geo.frame_h, : geo.frame_w], None
        elif code is not None and (fmt is PixelFormat.YUV420 or self.channels == 1):
            assert self._convert_buf is not None
            image, code = cv2.cvtColor(image, code, dst=self._convert_buf), None  # I420 and 3->1 cannot be warped as is
        s = geo.scale_x
        matrix = np.array([[s, 0.0, -geo.crop_x * s], [0.0, s, -geo.crop_y * s]], np.float64)
        border = (self.spec.pad_value,) * 4
        cv2.warpAffine(
            image, matrix, (geo.input_w, geo.input_h), dst=target, flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=border,
        )  # fmt: skip
        if code is not None:
            cv2.cvtColor(target, code, dst=target)

    def _finish(self, dst: np.ndarray) -> None:
        """Scratch (uint8, HWC) -> final values in ``dst`` through the lookup table."""
        scratch, lut = self._scratch, self._lut
        assert scratch is not None
        if self.spec.layout is Layout.NHWC:
            target = dst[0] if self.channels > 1 else dst[0, :, :, 0]
            if lut is None:
                np.copyto(target, scratch)
            else:
                cv2.LUT(scratch, lut if self.channels > 1 else self._channel_luts[0], dst=target)
            return
        if self.channels > 1:
            cv2.split(scratch, self._planes)  # HWC -> planes, into preallocated arrays
        for c, plane in enumerate(self._planes if self.channels > 1 else [scratch]):
            if lut is None:
                np.copyto(dst[0, c], plane)
            else:
                cv2.LUT(plane, self._channel_luts[c], dst=dst[0, c])


def _fill_padding(target: np.ndarray, geo: Letterbox, value: int) -> None:
    """Letterbox bands around the image; refilled each frame (the runtime may reuse the buffer)."""
    if geo.pad_y:
        target[: geo.pad_y] = value
        target[geo.pad_y + geo.inner_h :] = value
    if geo.pad_x:
        target[:, : geo.pad_x] = value
        target[:, geo.pad_x + geo.inner_w :] = value
