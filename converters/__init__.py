"""Workstation model converters: ``convert-to-tflite`` and ``quantize-onnx``.

Public face: :func:`convert_to_tflite` / :class:`ConvertOptions`, :func:`quantize_onnx` /
:class:`OnnxQuantOptions`, :func:`validate_conversion`, and the error types. Toolchains (torch,
litert-torch, TensorFlow, onnx2tf) are optional extras imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ConvertOptions", "ConverterError", "OnnxQuantOptions", "convert_to_tflite", "quantize_onnx",
           "validate_conversion"]

_EXPORTS = {
    "ConvertOptions": "converters.convert", "convert_to_tflite": "converters.convert",
    "OnnxQuantOptions": "converters.onnx_quant", "quantize_onnx": "converters.onnx_quant",
    "validate_conversion": "converters.report", "ConverterError": "converters.errors",
}

if TYPE_CHECKING:
    from converters.convert import ConvertOptions, convert_to_tflite
    from converters.errors import ConverterError
    from converters.onnx_quant import OnnxQuantOptions, quantize_onnx
    from converters.report import validate_conversion


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'converters' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
