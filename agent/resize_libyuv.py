"""Bilinear resize computed as libyuv computes it, for models whose reference resizes with libyuv.

The TFLite Task Library (tflite-support) resizes every frame with ``libyuv::ARGBScale(kFilterBilinear)``.
Its arithmetic differs from OpenCV's enough to move a classifier's scores by a few hundredths: 16.16
fixed-point source positions centred on the destination pixel (``x = dx / 2 - 0.5``), rows blended with
8-bit weights rounded ``(a * (256 - f) + b * f + 128) >> 8``, then columns with 7-bit weights that sum to
127 (``(a * (127 - f) + b * f) >> 7``, ``ScaleARGBFilterCols``). This module reproduces that general
path with numpy, into preallocated buffers (nothing frame-sized is allocated per frame). libyuv's
special cases for exact integer ratios (2x, 3x, ... down) are not reproduced: those frames get the
general formula.
"""

from __future__ import annotations

import numpy as np


def _slope(src: int, dst: int) -> tuple[int, int]:
    """libyuv ScaleSlope for bilinear filtering: (start, step) in 16.16 fixed point."""
    if dst <= src:
        step = (src << 16) // dst
        return (step >> 1) - 32768, step  # centre the filter on the destination pixel
    step = ((src << 16) - 0x00010001) // (dst - 1) if dst > 1 and src > 1 else 0
    return 0, step


class LibyuvBilinear:
    """Resize ``(src_h, src_w, C)`` uint8 images to ``(dst_h, dst_w, C)`` as ``libyuv::ARGBScale`` bilinear does."""

    def __init__(self, src_w: int, src_h: int, dst_w: int, dst_h: int, channels: int) -> None:
        x0, dx = _slope(src_w, dst_w)
        y0, dy = _slope(src_h, dst_h)
        ys = np.minimum(y0 + np.arange(dst_h, dtype=np.int64) * dy, (src_h - 1) << 16)
        ys = np.maximum(ys, 0)
        xs = np.maximum(x0 + np.arange(dst_w, dtype=np.int64) * dx, 0)
        self._rows = ys >> 16
        self._rows_below = np.minimum(self._rows + 1, src_h - 1)  # weight 0 on the last row
        row_f = ((ys >> 8) & 255).astype(np.uint16)
        self._w_top = (256 - row_f).reshape(-1, 1, 1)
        self._w_bottom = row_f.reshape(-1, 1, 1)
        self._cols = np.minimum(xs >> 16, src_w - 1)
        self._cols_right = np.minimum(self._cols + 1, src_w - 1)
        col_f = ((xs >> 9) & 0x7F).astype(np.uint16)
        self._w_left = (127 - col_f).reshape(1, -1, 1)
        self._w_right = col_f.reshape(1, -1, 1)
        # preallocated once per geometry: gathered rows (uint8), blended rows and columns (uint16)
        self._top8 = np.empty((dst_h, src_w, channels), np.uint8)
        self._bottom8 = np.empty_like(self._top8)
        self._top = np.empty((dst_h, src_w, channels), np.uint16)
        self._bottom = np.empty_like(self._top)
        self._left = np.empty((dst_h, dst_w, channels), np.uint16)
        self._right = np.empty_like(self._left)

    def resize(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Write the resized ``src`` into ``dst`` (a uint8 view of shape ``(dst_h, dst_w, C)``)."""
        np.take(src, self._rows, axis=0, out=self._top8)
        np.take(src, self._rows_below, axis=0, out=self._bottom8)
        np.multiply(self._top8, self._w_top, out=self._top)
        np.multiply(self._bottom8, self._w_bottom, out=self._bottom)
        self._top += self._bottom
        self._top += 128
        self._top >>= 8
        np.take(self._top, self._cols, axis=1, out=self._left)
        np.take(self._top, self._cols_right, axis=1, out=self._right)
        self._left *= self._w_left
        self._right *= self._w_right
        self._left += self._right
        self._left >>= 7
        np.copyto(dst, self._left, casting="unsafe")
