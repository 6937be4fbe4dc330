"""Hand-built output tensors for decoder tests: float scenes and their quantized twins."""

from __future__ import annotations

import numpy as np

from agent.decoders.base import TensorInfo


def quantize(real: np.ndarray, scale: float, zero_point: int, dtype: type[np.integer]) -> np.ndarray:
    """``q = round(real / scale) + zero_point``, saturated to the dtype, as a TFLite quantized output would hold."""
    limits = np.iinfo(dtype)
    q = np.round(np.asarray(real, dtype=np.float64) / scale) + zero_point
    return np.clip(q, limits.min, limits.max).astype(dtype)


def float_info(name: str, array: np.ndarray) -> TensorInfo:
    return TensorInfo(name=name, shape=tuple(array.shape), dtype=np.dtype(array.dtype))


def quant_info(name: str, array: np.ndarray, scale: float, zero_point: int) -> TensorInfo:
    return TensorInfo(name=name, shape=tuple(array.shape), dtype=np.dtype(array.dtype), scale=scale, zero_point=zero_point)


# (dtype, scale, zero_point) pairs that cover 0..1 scores the way TFLite int8/uint8 exports do.
UNIT_QUANT = {
    "int8": (np.int8, 1.0 / 255.0, -128),
    "uint8": (np.uint8, 1.0 / 255.0, 0),
}


def as_variant(real: np.ndarray, name: str, variant: str) -> tuple[np.ndarray, TensorInfo]:
    """The same tensor as float32, or int8/uint8 quantized over 0..1."""
    if variant == "float32":
        arr = np.asarray(real, dtype=np.float32)
        return arr, float_info(name, arr)
    dtype, scale, zp = UNIT_QUANT[variant]
    arr = quantize(real, scale, zp, dtype)
    return arr, quant_info(name, arr, scale, zp)
