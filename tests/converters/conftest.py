"""Fixtures of the converter tests (helpers and the why live in convert_helpers.py)."""

from convert_helpers import calibration_dir, conversions, dynamic_onnx, tf_python, torch_python

__all__ = ["calibration_dir", "conversions", "dynamic_onnx", "tf_python", "torch_python"]
