"""Export the trained demo detector: float and int8 TFLite (litert-torch + ai-edge-quantizer), ONNX and QDQ ONNX.

TFLite int8 I/O: ai-edge-quantizer's ``static_wi8_ai8`` already quantizes the graph input and output
to int8. We pin the input's range to exactly 0..1 (pixel / 255; the calibration set may not contain a
pure 0 or 255 pixel) and prepend a uint8 -> int8 QUANTIZE op, so the model takes uint8 RGB with
scale 1/255 and zero point 0: the agent writes letterboxed camera bytes straight into the input.
The output stays int8 ([1, 4+C, N], one per-tensor scale; boxes are 0..1 so it fits the scores).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from _demo_train import DemoDetector

if TYPE_CHECKING:
    import onnx

ONNX_OPSET = 18  # the torch.onnx (dynamo) exporter's native opset; >= 17 as the agent requires
ONNX_INPUT, ONNX_OUTPUT = "images", "output0"
MAX_IR_VERSION = 9
INT8_RECIPE = "static_wi8_ai8"
HEAD_SCOPE = ".*DetectHead_head.*"  # litert-torch names tensors after the torch module scope


# ---- TFLite ------------------------------------------------------------------------------------

def export_tflite_fp32(model: DemoDetector, path: Path, check_images: np.ndarray) -> None:
    """Float32 TFLite with an NHWC ``1xSxSx3`` input (camera-frame layout), checked against torch."""
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    size = model.input_size
    wrapped = litert_torch.to_channel_last_io(model, args=[0]).eval()
    with _quiet():
        edge_model = litert_torch.convert(wrapped, (torch.rand(1, size, size, 3),))
        edge_model.export(str(path))
    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp, x.transpose(0, 2, 3, 1).copy())
        interp.invoke()
        return interp.get_tensor(out)

    _check_parity(model, run, check_images, path)


def quantize_tflite_int8(fp32_path: Path, calibration: np.ndarray, path: Path) -> dict[str, object]:
    """Static int8 (weights per-channel, activations per-tensor) with ai-edge-quantizer; uint8 camera input.

    ``calibration`` holds letterboxed RGB uint8 images ``[K, S, S, 3]``.
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe

    input_name = Interpreter(model_path=str(fp32_path)).get_signature_list()["serving_default"]["inputs"][0]
    q = quantizer.Quantizer(str(fp32_path))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    # the head (1x1 convs + decode) stays float; measured on this model, an int8 head costs
    # ~0.05 mAP@0.5:0.95 for ~0.2% of the compute. Only its final output is quantized, once.
    q.update_quantization_recipe(regex=HEAD_SCOPE, operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                 algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    samples = [{input_name: img[None].astype(np.float32) / 255.0} for img in calibration]
    with _quiet():
        qsvs = q.calibrate({"serving_default": samples}, num_threads=os.cpu_count() or 1)
    # exact ranges by construction, not by what the calibration set happened to contain:
    # input = pixel / 255 in 0..1, output = normalized boxes and sigmoid scores in 0..1
    for name in [*_input_range_tensors(fp32_path), *_output_range_tensors(fp32_path)]:
        qsvs[name] = {"min": np.zeros(1, np.float32), "max": np.ones(1, np.float32)}
    with _quiet():
        result = q.quantize(qsvs, enable_progress_report=False)
    path.write_bytes(_with_uint8_input(bytes(result.quantized_model)))
    return {"method": "ai-edge-quantizer static PTQ", "recipe": INT8_RECIPE,
            "weights": "int8 symmetric per-channel", "activations": "int8 asymmetric per-tensor (min/max)",
            "float_ops": "detection head: 1x1 convs and box/score decode (DetectHead)",
            "calibration_images": len(calibration), "input_type": "uint8 (scale 1/255, zero point 0)",
            "output_type": "int8 (scale 1/255, zero point -128)"}


def _input_range_tensors(fp32_path: Path) -> list[str]:
    """The graph input and the outputs of the ops reading it (PAD/CONV here): they share the input's range."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(fp32_path.read_bytes()))
    sg = model.subgraphs[0]
    graph_input = sg.inputs[0]
    names = [sg.tensors[graph_input].name]
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if graph_input in list(op.inputs) and _builtin(code) == _op("PAD"):
            names += [sg.tensors[o].name for o in op.outputs]
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _output_range_tensors(fp32_path: Path) -> list[str]:
    """The graph output and the tensors that reach it through data-movement ops (they share its range)."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(fp32_path.read_bytes()))
    sg = model.subgraphs[0]
    producers = {int(o): op for op in sg.operators for o in op.outputs}
    names, tensor = [], int(sg.outputs[0])
    while True:
        names.append(sg.tensors[tensor].name)
        op = producers.get(tensor)
        if op is None or _builtin(model.operatorCodes[op.opcodeIndex]) not in (_op("RESHAPE"), _op("TRANSPOSE")):
            break
        tensor = int(op.inputs[0])
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _with_uint8_input(model_bytes: bytes) -> bytes:
    """Make the int8 graph input internal and feed it from a new uint8 input through a QUANTIZE op.

    uint8 with scale s and zero point z+128 is the int8 tensor's exact twin (TFLite's converter does
    the same for ``inference_input_type=uint8``); the QUANTIZE kernel requantizes uint8 -> int8.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(model_bytes))
    sg = model.subgraphs[0]
    old_index = sg.inputs[0]
    old = sg.tensors[old_index]
    if old.type != fb.TensorType.INT8:
        raise RuntimeError(f"expected an int8 graph input after quantization, got tensor type {old.type}")
    new = fb.TensorT()
    new.name, old.name = old.name, (old.name.decode() if isinstance(old.name, bytes) else old.name) + "_int8"
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


def _op(name: str) -> int:
    from ai_edge_litert import schema_py_generated as fb

    return int(getattr(fb.BuiltinOperator, name))


def _builtin(code: object) -> int:
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))  # type: ignore[attr-defined]


def _opcode_index(model: object, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as fb

    codes = model.operatorCodes  # type: ignore[attr-defined]
    for i, code in enumerate(codes):
        if _builtin(code) == builtin:
            return i
    code = fb.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 2
    codes.append(code)
    return len(codes) - 1


def _check_parity(model: DemoDetector, run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, path: Path,
                  tolerance: float = 1e-4) -> None:
    """A float export must reproduce torch: a silent converter bug would otherwise only show up as lower mAP."""
    worst = 0.0
    for img in images:
        x = img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.abs(run(x) - expected).max()))
    if worst > tolerance:
        raise RuntimeError(f"{path.name}: outputs differ from torch by up to {worst:.3g} (tolerance {tolerance}); "
                           "the converter produced a wrong graph or wrong weights")


def embed_tflite_manifest(path: Path, manifest_json: str) -> None:
    """Append a zip holding ``metadata.json``; the interpreter ignores bytes after the flatbuffer."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", manifest_json)


# ---- ONNX --------------------------------------------------------------------------------------

def export_onnx_fp32(model: DemoDetector, path: Path, check_images: np.ndarray) -> None:
    """Static-shape NCHW float ONNX: input ``images`` [1,3,S,S], output ``output0`` [1,4+C,N]; checked against torch."""

    size = model.input_size
    with _quiet():
        torch.onnx.export(model, (torch.rand(1, 3, size, size),), str(path), input_names=[ONNX_INPUT],
                          output_names=[ONNX_OUTPUT], opset_version=ONNX_OPSET, dynamo=True, external_data=False)
    proto = _cap_ir_version(path)
    got = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    if got != ([ONNX_INPUT], [ONNX_OUTPUT]):
        raise RuntimeError(f"ONNX export named its tensors {got}, expected ([{ONNX_INPUT}], [{ONNX_OUTPUT}])")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _check_parity(model, lambda x: sess.run(None, {ONNX_INPUT: x})[0], check_images, path)


class _CalibrationReader:
    """onnxruntime CalibrationDataReader over letterboxed RGB uint8 images."""

    def __init__(self, images: np.ndarray) -> None:
        self._images = images
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._images):
            return None
        img = self._images[self._i]
        self._i += 1
        return {ONNX_INPUT: img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0}

    def rewind(self) -> None:
        self._i = 0


def quantize_onnx_int8(fp32_path: Path, calibration: np.ndarray, path: Path, workdir: Path,
                       float_head: bool) -> dict[str, object]:
    """ORT static QDQ int8: pre-process, then S8S8 with per-channel weights and MinMax calibration.

    ``float_head`` keeps the detection head (its 1x1 convs and the decode arithmetic) in float.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    prep = workdir / "model.prep.onnx"
    with _quiet():
        quant_pre_process(str(fp32_path), str(prep), skip_symbolic_shape=True)
    excluded = _head_nodes(onnx.load(str(prep))) if float_head else []
    with _quiet():
        quantize_static(str(prep), str(path), _CalibrationReader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded)
    _cap_ir_version(path)
    return {"method": "onnxruntime static PTQ (quantize_static)", "format": "QDQ",
            "weights": "int8 symmetric per-channel", "activations": "int8 per-tensor (MinMax)",
            "calibration_images": len(calibration), "input_type": "float32", "output_type": "float32",
            "float_nodes": excluded}


def _cap_ir_version(path: Path) -> onnx.ModelProto:
    """IR 9 (nothing here needs IR 10): the agent allows onnxruntime >= 1.17, which loads at most IR 9."""
    import onnx

    proto = onnx.load(str(path))
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
    return proto


def _head_nodes(proto: onnx.ModelProto) -> list[str]:
    """The detection head: every node from the output back to (and including) the last convs."""
    graph = proto.graph
    producers = {out: node for node in graph.node for out in node.output}
    head: list[str] = []
    stack = [o.name for o in graph.output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in head:
            continue
        head.append(node.name)
        if node.op_type != "Conv":  # the head's 1x1 convs end the walk; the neck stays int8
            stack.extend(node.input)
    return head


def embed_onnx_manifest(path: Path, manifest_json: str) -> None:
    import onnx

    proto = onnx.load(str(path))
    for prop in list(proto.metadata_props):
        if prop.key == "edge_agent_manifest":
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "edge_agent_manifest", manifest_json
    onnx.save(proto, str(path))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the converters' chatter (stdout/stderr from Python); our own progress stays visible."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    except BaseException:
        sys.stderr.write(sink.getvalue())  # the chatter explains the failure
        raise
