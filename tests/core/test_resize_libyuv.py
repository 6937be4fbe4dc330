"""libyuv's bilinear scale, vectorized, equals its scalar C formulas (the Task Library conformance case is the oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.resize_libyuv import LibyuvBilinear


def _scalar(src: np.ndarray, dst_w: int, dst_h: int) -> np.ndarray:
    """ScaleARGBBilinearDown as libyuv's C code writes it: InterpolateRow_C, then ScaleARGBFilterCols_C (BLENDER1)."""
    src_h, src_w = src.shape[:2]
    dx, dy = (src_w << 16) // dst_w, (src_h << 16) // dst_h
    x0, y = (dx >> 1) - 32768, (dy >> 1) - 32768
    out = np.zeros((dst_h, dst_w, src.shape[2]), np.uint8)
    for j in range(dst_h):
        yc = min(max(y, 0), (src_h - 1) << 16)
        yi, yf = yc >> 16, (yc >> 8) & 255
        below = src[min(yi + 1, src_h - 1)].astype(int)
        row = (src[yi].astype(int) * (256 - yf) + below * yf + 128) >> 8
        x = x0
        for i in range(dst_w):
            xc = max(x, 0)
            xi, f = xc >> 16, (xc >> 9) & 0x7F
            out[j, i] = (row[xi] * (127 - f) + row[min(xi + 1, src_w - 1)] * f) >> 7
            x += dx
        y += dy
    return out


@pytest.mark.parametrize(("src", "dst"), [((13, 9), (5, 4)), ((64, 48), (24, 24)), ((40, 90), (16, 16))])
def test_vectorized_equals_the_c_formulas(src: tuple[int, int], dst: tuple[int, int]) -> None:
    image = np.random.default_rng(2).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    out = np.zeros((dst[1], dst[0], 3), np.uint8)
    resizer = LibyuvBilinear(src[0], src[1], dst[0], dst[1], 3)
    resizer.resize(image, out)
    np.testing.assert_array_equal(out, _scalar(image, *dst))
    again = np.zeros_like(out)
    resizer.resize(image, again)  # buffers are reused: a second frame gives the same answer
    np.testing.assert_array_equal(again, out)


def test_differs_from_opencv_where_the_task_library_does() -> None:
    """The 7-bit column weights sum to 127: a flat grey comes out a shade darker than OpenCV's exact bilinear."""
    flat = np.full((30, 40, 3), 200, np.uint8)
    out = np.zeros((10, 10, 3), np.uint8)
    LibyuvBilinear(40, 30, 10, 10, 3).resize(flat, out)
    assert out.max() < 200
