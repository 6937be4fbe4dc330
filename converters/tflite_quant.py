"""Quantize a float32 .tflite with ai-edge-quantizer (LiteRT Quantizer): fp16, dynamic, static int8.

The two-step flow LiteRT recommends (float model first, then the quantizer) for every input kind, so
the torch, ONNX and Keras paths share one quantizer, one head guard and one uint8-input rewrite.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from converters import tflite_graph as graph
from converters.errors import OptionError
from converters.progress import quiet
from converters.toolchain import require

MODES = ("fp32", "fp16", "dynamic", "int8")


def quantize(
    fp32_path: Path,
    out_path: Path,
    mode: str,
    calibration: np.ndarray | None,
    io_type: str,
    float_head: bool,
    input_range: tuple[float, float] | None,
) -> dict[str, object]:
    """Write ``out_path``; return the quantization parameters recorded in the manifest.

    ``calibration`` holds float inputs in the TFLite input layout (int8 only). ``float_head`` keeps the
    ops between the last convolutions and the output in float (the int8 detection-head guard).
    ``input_range`` pins the input tensor's range when it is known exactly (pixels/255 -> 0..1).
    """
    if mode == "fp32":
        if io_type != "float32":
            raise OptionError("--io-type uint8/int8 needs --quantize int8 (a float model has float I/O)")
        out_path.write_bytes(fp32_path.read_bytes())
        return {"mode": "fp32"}
    aeq = require("ai_edge_quantizer", why="TFLite quantization")
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe

    graph.ensure_signature(fp32_path)
    q = quantizer.Quantizer(str(fp32_path))
    if mode in ("fp16", "dynamic") and io_type != "float32":
        raise OptionError(f"--io-type {io_type} needs --quantize int8; {mode} keeps float32 I/O")
    if mode == "fp16":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        q.update_quantization_recipe(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT,
                explicit_dequantize=True,
            ),
            algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
        )
        with quiet():
            result = q.quantize(enable_progress_report=False)
        out_path.write_bytes(bytes(result.quantized_model))
        return {
            "mode": "fp16",
            "method": f"ai-edge-quantizer {_version(aeq)} float casting",
            "weights": "float16 (dequantized to float32 at load)",
            "activations": "float32",
        }
    if mode == "dynamic":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        with quiet():
            result = q.quantize(enable_progress_report=False)
        out_path.write_bytes(bytes(result.quantized_model))
        return {
            "mode": "dynamic",
            "method": f"ai-edge-quantizer {_version(aeq)} dynamic_wi8_afp32",
            "weights": "int8 symmetric per-channel",
            "activations": "float32 (int8 computed on the fly)",
        }
    if mode != "int8":
        raise OptionError(f"--quantize {mode!r}: choose one of {', '.join(MODES)}")
    if calibration is None or len(calibration) == 0:
        raise OptionError("--quantize int8 needs --calibration DIR (representative images)")
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    head_names = graph.head_tensor_names(fp32_path) if float_head else []
    if head_names:
        # the quantizer matches an op's "scope": its output tensor names joined and ended with ";"
        regex = "^(?:" + "|".join(re.escape(n) for n in head_names) + ");"
        q.update_quantization_recipe(
            regex=regex,
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE,
        )
    if io_type == "float32":  # keep the graph I/O float: quantize after the input, dequantize before outputs
        for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            q.update_quantization_recipe(regex=".*", operation_name=op, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    input_name = graph.signature_input_name(fp32_path)
    samples = [{input_name: x[None].astype(np.float32)} for x in calibration]
    with quiet():
        qsvs = q.calibrate({"serving_default": samples}, num_threads=os.cpu_count() or 1)
    if input_range is not None:  # exact by construction, not what the calibration set happened to contain
        lo, hi = input_range
        for name in graph.input_range_tensors(fp32_path):
            if name in qsvs:
                qsvs[name] = {"min": np.full(1, lo, np.float32), "max": np.full(1, hi, np.float32)}
    with quiet():
        result = q.quantize(qsvs, enable_progress_report=False)
    model = bytes(result.quantized_model)
    if io_type == "uint8":
        model = graph.with_uint8_input(model)
    out_path.write_bytes(model)
    return {
        "mode": "int8",
        "method": f"ai-edge-quantizer {_version(aeq)} static PTQ",
        "recipe": "static_wi8_ai8",
        "weights": "int8 symmetric per-channel",
        "activations": "int8 asymmetric per-tensor (min/max)",
        "calibration_images": len(calibration),
        "input_type": io_type,
        "float_ops": (head_names and f"detection head kept in float ({len(head_names)} tensors)") or "none",
        "output_type": graph.output_type(model),
    }


def _version(module: object) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("ai-edge-quantizer")
    except importlib.metadata.PackageNotFoundError:
        return getattr(module, "__version__", "?")
