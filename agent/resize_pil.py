"""Antialiased bilinear resize computed as Pillow computes it, for the centre crop of Ultralytics classifiers.

Ultralytics classifiers are fed ``torchvision`` ``Resize(size)`` (short side to ``size``, on a PIL image:
Pillow's bilinear filter widened by the scale factor, i.e. antialiased) then ``CenterCrop(size)``.
Pillow resamples separably, horizontal pass then vertical, each output pixel a weighted sum over a
window of the triangle filter scaled by ``max(scale, 1)``, with weights normalized and held in 22-bit
fixed point, rounded and clipped to 8 bits after each pass. This module reproduces that for the
output pixels the crop keeps, from tables built once per frame geometry; per frame it only gathers,
multiplies and sums into preallocated buffers. Pillow's C core runs the horizontal pass first; recent
Pillow releases run the vertical pass first for some geometries, which moves a few pixels by one
level (measured against Pillow 13: exact on landscape camera frames, within 1/255 on a 300x700 one).
"""

from __future__ import annotations

import math

import numpy as np

_PRECISION_BITS = 32 - 8 - 2  # Pillow's 8-bit-per-channel coefficient precision


def _coefficients(in_size: int, out_size: int, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (count, taps) and fixed-point weights (count, taps) of output pixels first..first+count."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # bilinear filter support is 1
    rows: list[tuple[int, list[float]]] = []
    for out in range(first, first + count):
        center = (out + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        weights = [max(0.0, 1.0 - abs((x - center + 0.5) / filterscale)) for x in range(xmin, xmax)]
        total = sum(weights)
        rows.append((xmin, [w / total if total else 0.0 for w in weights]))
    taps = max(len(w) for _, w in rows)
    index = np.zeros((count, taps), np.intp)
    fixed = np.zeros((count, taps), np.int64)
    for i, (xmin, weights) in enumerate(rows):
        index[i] = np.minimum(np.arange(xmin, xmin + taps), in_size - 1)
        for k, w in enumerate(weights):
            # C's (int) truncates toward zero: Pillow rounds half away from zero this way
            fixed[i, k] = math.floor(0.5 + w * (1 << _PRECISION_BITS)) if w >= 0 else int(-0.5 + w * (1 << _PRECISION_BITS))
    return index, fixed


def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)``: the short side becomes ``size``, the long side ``int(size * long / short)``."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_origin(resized_w: int, resized_h: int, out_w: int, out_h: int) -> tuple[int, int]:
    """torchvision ``CenterCrop``: left and top of the kept region, ``round((size - crop) / 2)``."""
    return round((resized_w - out_w) / 2.0), round((resized_h - out_h) / 2.0)


class PilResizeCrop:
    """``Resize(short side)`` then ``CenterCrop(out_w, out_h)`` as torchvision on a PIL image computes them."""

    def __init__(self, src_w: int, src_h: int, out_w: int, out_h: int, channels: int) -> None:
        resized_w, resized_h = short_side_size(src_w, src_h, min(out_w, out_h))
        left, top = crop_origin(resized_w, resized_h, out_w, out_h)
        self._cols, self._col_weights = _coefficients(src_w, resized_w, left, out_w)
        self._rows, self._row_weights = _coefficients(src_h, resized_h, top, out_h)
        # per tap: one gather, one multiply, one add into an int32 accumulator (weights sum to 2**22: no overflow)
        self._col_w = [self._col_weights[:, k].astype(np.int32)[None, :, None] for k in range(self._cols.shape[1])]
        self._row_w = [self._row_weights[:, k].astype(np.int32)[:, None, None] for k in range(self._rows.shape[1])]
        self._gather_h = np.empty((src_h, out_w, channels), np.uint8)
        self._term_h = np.empty((src_h, out_w, channels), np.int32)
        self._acc_h = np.empty((src_h, out_w, channels), np.int32)
        self._pass_h = np.empty((src_h, out_w, channels), np.uint8)
        self._gather_v = np.empty((out_h, out_w, channels), np.uint8)
        self._term_v = np.empty((out_h, out_w, channels), np.int32)
        self._acc_v = np.empty((out_h, out_w, channels), np.int32)

    def resize(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Write the resized and cropped ``src`` (H, W, C uint8) into ``dst`` (out_h, out_w, C uint8)."""
        self._acc_h.fill(0)
        for k, weight in enumerate(self._col_w):
            np.take(src, self._cols[:, k], axis=1, out=self._gather_h)
            np.multiply(self._gather_h, weight, out=self._term_h)
            self._acc_h += self._term_h
        _round_clip(self._acc_h, self._pass_h)
        self._acc_v.fill(0)
        for k, weight in enumerate(self._row_w):
            np.take(self._pass_h, self._rows[:, k], axis=0, out=self._gather_v)
            np.multiply(self._gather_v, weight, out=self._term_v)
            self._acc_v += self._term_v
        _round_clip(self._acc_v, dst)


def _round_clip(acc: np.ndarray, out: np.ndarray) -> None:
    """Pillow's ``clip8``: add half, shift out the precision bits, clamp to 0..255."""
    acc += 1 << (_PRECISION_BITS - 1)
    acc >>= _PRECISION_BITS
    np.clip(acc, 0, 255, out=acc)
    np.copyto(out, acc, casting="unsafe")
