"""Small real ONNX models built with ``onnx.helper`` for loader tests: dynamic axes, metadata, odd outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

Dim = int | str | None


def yolo_like(
    path: Path,
    input_dims: Sequence[Dim],
    output_dims: Sequence[Dim],
    classes: int = 2,
    props: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """An NCHW float model whose one output is a YOLOv8-layout ``[N, 4+C, H/8 * W/8]`` head.

    A stride-8 convolution then a reshape: the output size follows the input size, as a real
    detector's anchor count does. ``props`` become ``metadata_props`` (as Ultralytics writes them).
    """
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    channels = 4 + classes
    weights = rng.normal(0, 0.05, (channels, 3, 8, 8)).astype(np.float32)
    bias = np.array([40.0, 40.0, 20.0, 20.0] + [0.0] * classes, np.float32)  # boxes in input pixels
    nodes = [
        helper.make_node("Conv", ["images", "w", "b"], ["conv"], strides=[8, 8]),
        helper.make_node("Reshape", ["conv", "shape"], ["output0"]),
    ]
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel()),
        helper.make_tensor("b", TensorProto.FLOAT, bias.shape, bias),
        helper.make_tensor("shape", TensorProto.INT64, [3], [0, channels, -1]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo_like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output_dims))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for key, value in (props or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def classifier(path: Path, input_dims: Sequence[Dim], classes: int = 5, seed: int = 0) -> Path:
    """An NCHW float classifier: global average pool, a dense layer, softmax -> ``[N, C]``."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    dense = rng.normal(0, 1.0, (3, classes)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "dense"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [input_dims[0], classes])],
        [helper.make_tensor("dense", TensorProto.FLOAT, dense.shape, dense.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def two_unknown_outputs(path: Path) -> Path:
    """A static model whose outputs fit no decoder (two [1, 7] vectors)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["m"], keepdims=0),
        helper.make_node("Tile", ["m", "reps"], ["a"]),
        helper.make_node("Tile", ["m", "reps"], ["b"]),
    ]
    graph = helper.make_graph(
        nodes,
        "odd",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 21]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 21]),
        ],
        [
            helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
            helper.make_tensor("reps", TensorProto.INT64, [2], [1, 7]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path
