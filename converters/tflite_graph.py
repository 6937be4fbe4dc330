"""Small .tflite flatbuffer edits and queries (ai_edge_litert's schema and flatbuffer_utils)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: ops whose output ends the detection-head walk: the head's last convolutions (weights) stay float
_HEAD_STOPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_DATA_MOVEMENT = ("RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS")


def _read(data: bytes | Path) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    raw = data.read_bytes() if isinstance(data, Path) else data
    return fbu.read_model_from_bytearray(bytearray(raw))


def _name(tensor: Any) -> str:
    n = tensor.name
    return n.decode() if isinstance(n, bytes) else str(n)


def _op(name: str) -> int:
    from ai_edge_litert import schema_py_generated as fb

    return int(getattr(fb.BuiltinOperator, name))


def _builtin(code: Any) -> int:
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def op_names(data: bytes | Path) -> list[str]:
    """Builtin op names used by the model (for reports and tests)."""
    from ai_edge_litert import schema_py_generated as fb

    model = _read(data)
    by_value = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    return sorted({by_value.get(_builtin(model.operatorCodes[op.opcodeIndex]), "?") for op in model.subgraphs[0].operators})


def has_custom_op(data: bytes | Path, name: str) -> bool:
    """Does the model use the custom op ``name`` (e.g. TFLite_Detection_PostProcess)?"""
    model = _read(data)
    for code in model.operatorCodes:
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        if custom == name:
            return True
    return False


def signature_input_name(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_path=str(path)).get_signature_list()
    key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
    return sigs[key]["inputs"][0]


def head_tensor_names(path: Path) -> list[str]:
    """Tensors from the graph outputs back to (and including) the last conv/FC outputs: the detection head."""
    model = _read(path)
    sg = model.subgraphs[0]
    producers = {int(o): op for op in sg.operators for o in op.outputs}
    stops = {_op(n) for n in _HEAD_STOPS}
    seen: set[int] = set()
    stack = [int(o) for o in sg.outputs]
    names: list[str] = []
    while stack:
        t = stack.pop()
        op = producers.get(t)
        if t in seen or op is None:
            continue
        seen.add(t)
        names.append(_name(sg.tensors[t]))
        if _builtin(model.operatorCodes[op.opcodeIndex]) in stops:
            continue
        stack.extend(int(i) for i in op.inputs if int(i) >= 0)
    return names


def input_range_tensors(path: Path) -> list[str]:
    """The graph input and the outputs of PAD/data-movement ops reading it: they share the input's range."""
    model = _read(path)
    sg = model.subgraphs[0]
    graph_input = int(sg.inputs[0])
    names = [_name(sg.tensors[graph_input])]
    follow = {_op(n) for n in ("PAD", *_DATA_MOVEMENT)}
    for op in sg.operators:
        if graph_input in [int(i) for i in op.inputs] and _builtin(model.operatorCodes[op.opcodeIndex]) in follow:
            names += [_name(sg.tensors[int(o)]) for o in op.outputs]
    return names


def output_type(data: bytes) -> str:
    from ai_edge_litert import schema_py_generated as fb

    model = _read(data)
    sg = model.subgraphs[0]
    by_value = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    return ", ".join(by_value.get(sg.tensors[int(o)].type, "?").lower() for o in sg.outputs)


def with_uint8_input(model_bytes: bytes) -> bytes:
    """Make the int8 graph input internal and feed it from a new uint8 input through a QUANTIZE op.

    uint8 with scale s and zero point z+128 is the int8 tensor's exact twin (the TF converter does the
    same for ``inference_input_type=uint8``): the agent writes letterboxed camera bytes straight in.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = _read(model_bytes)
    sg = model.subgraphs[0]
    old_index = int(sg.inputs[0])
    old = sg.tensors[old_index]
    if old.type != fb.TensorType.INT8:
        raise ValueError(f"expected an int8 graph input after quantization, got tensor type {old.type}")
    new = fb.TensorT()
    new.name, old.name = old.name, _name(old) + "_int8"
    new.shape, new.shapeSignature, new.buffer = list(old.shape), old.shapeSignature, old.buffer
    new.type = fb.TensorType.UINT8
    new.quantization = fb.QuantizationParametersT()
    new.quantization.scale = [float(old.quantization.scale[0])]
    new.quantization.zeroPoint = [int(old.quantization.zeroPoint[0]) + 128]
    sg.tensors.append(new)
    new_index = len(sg.tensors) - 1
    op = fb.OperatorT()
    op.opcodeIndex = _opcode_index(model, _op("QUANTIZE"))
    op.inputs, op.outputs = [new_index], [old_index]
    sg.operators.insert(0, op)
    sg.inputs = [new_index]
    for sig in model.signatureDefs or []:
        for tensor_map in sig.inputs:
            if tensor_map.tensorIndex == old_index:
                tensor_map.tensorIndex = new_index
    return bytes(fbu.convert_object_to_bytearray(model))


def _opcode_index(model: Any, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as fb

    codes = model.operatorCodes
    for i, code in enumerate(codes):
        if _builtin(code) == builtin:
            return i
    code = fb.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 2
    codes.append(code)
    return len(codes) - 1


def ensure_signature(path: Path) -> None:
    """Give a signature-less model (onnx2tf's float32 file) a ``serving_default`` one: the quantizer calibrates per signature."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = _read(path)
    if model.signatureDefs:
        return
    sg = model.subgraphs[0]
    sig = fb.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0

    def maps(indices: Any) -> list[Any]:
        out = []
        for i in indices:
            m = fb.TensorMapT()
            m.name, m.tensorIndex = _name(sg.tensors[int(i)]), int(i)
            out.append(m)
        return out

    sig.inputs, sig.outputs = maps(sg.inputs), maps(sg.outputs)
    model.signatureDefs = [sig]
    path.write_bytes(bytes(fbu.convert_object_to_bytearray(model)))
