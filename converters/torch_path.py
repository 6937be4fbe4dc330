"""PyTorch -> float32 TFLite with litert-torch (no TensorFlow): load the source, export, check parity.

Why this path: litert-torch lowers the PyTorch graph directly (torch.export), so the output order,
names and numerics are the PyTorch model's own; no ONNX or TF round trip that reorders outputs.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ModelLoadError, ParityError, UnsupportedOpError
from converters.kinds import InputKind
from converters.progress import quiet
from converters.toolchain import require

PARITY_TOLERANCE = 1e-4  # float32 export vs torch, max abs on the check images
#: what to try when litert-torch cannot lower a model
TORCH_ALTERNATIVE = (
    "other route: export the model to ONNX (torch.onnx.export, or Ultralytics' format=onnx) and "
    "convert the .onnx (onnx2tf), or quantize that ONNX with quantize-onnx"
)


def load_torch_model(model: str, kind: InputKind, weights: Path | None = None) -> Any:
    """An eval-mode ``torch.nn.Module`` (or ExportedProgram module) for any PyTorch input kind."""
    torch = require("torch", why="PyTorch input")
    try:
        if kind is InputKind.torch_factory:
            module_name, attr = model.split(":", 1)
            if str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            try:
                factory = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ModelLoadError(f"cannot import the model factory {model!r}: {exc}") from None
            net = factory()
            if weights is not None:
                state = torch.load(str(weights), map_location="cpu", weights_only=True)
                net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        elif kind is InputKind.torchscript:
            net = torch.jit.load(model, map_location="cpu")
        elif kind is InputKind.ultralytics_pt:
            from converters.ultralytics_pt import load_checkpoint

            net = load_checkpoint(Path(model))
        elif kind is InputKind.exported_program:
            net = torch.export.load(model).module()
        else:
            net = torch.load(model, map_location="cpu", weights_only=False)
    except (ModelLoadError, UnsupportedOpError):
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/UnpicklingError/zip errors for bad files
        raise ModelLoadError(f"cannot load {model} as {kind.value}: {type(exc).__name__}: {exc}") from None
    if not hasattr(net, "forward") and not callable(net):
        raise ModelLoadError(f"{model} did not give a torch module (got {type(net).__name__})")
    if hasattr(net, "eval") and kind is not InputKind.exported_program:
        net = net.eval()
    # litert-torch 0.10.0 keys its constant cache on the address of a temporary .contiguous() copy:
    # channels_last weights can be silently swapped. Contiguous weights avoid that (parity check below).
    if isinstance(net, torch.nn.Module) and kind is not InputKind.torchscript:
        with torch.no_grad():
            for p in list(net.parameters()) + list(net.buffers()):
                if not p.is_contiguous():
                    p.data = p.data.contiguous()
    return net


def torch_forward(net: Any) -> Any:
    """``f(x: np.ndarray NCHW float32) -> list[np.ndarray]`` for the source model."""
    torch = require("torch")

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = net(torch.from_numpy(np.ascontiguousarray(x)))
        outs = out if isinstance(out, list | tuple) else [out]
        return [o.detach().numpy() for o in outs]

    return run


def export_fp32(net: Any, input_shape: tuple[int, ...], nhwc: bool, path: Path) -> None:
    """Float32 .tflite; ``nhwc`` wraps the NCHW model so the TFLite input is ``[1,H,W,C]`` like camera frames."""
    torch = require("torch", why="PyTorch input")
    litert_torch = require("litert_torch", why="PyTorch -> TFLite")
    sample_shape = (input_shape[0], input_shape[2], input_shape[3], input_shape[1]) if nhwc else input_shape
    if isinstance(net, torch.jit.ScriptModule):
        net = _unscript(net, torch.rand(*input_shape))
    module = litert_torch.to_channel_last_io(net, args=[0]) if nhwc else net
    with contextlib.suppress(NotImplementedError):  # an ExportedProgram's module refuses eval() (it is inference-only)
        module = module.eval()
    try:
        with quiet():
            edge = litert_torch.convert(module, (torch.rand(*sample_shape),))
            edge.export(str(path))
    except Exception as exc:  # noqa: BLE001 - torch.export / lowering raise many types; we name the op
        raise _conversion_error(exc) from None


def _unscript(scripted: Any, sample: Any) -> Any:
    """torch.export cannot trace a ScriptModule: convert it to an ExportedProgram (torch's TS2EP converter) first."""
    from torch._export.converter import TS2EPConverter

    try:
        return TS2EPConverter(scripted, (sample,)).convert().module()
    except Exception as exc:  # noqa: BLE001 - the converter raises per unsupported TorchScript construct
        raise _conversion_error(exc) from None


_OP_PATTERNS = [
    re.compile(r"(aten\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)"),
    re.compile(r"operator\s+'?([A-Za-z0-9_.:]+)'?"),
    re.compile(r"op(?:eration)?\s+['\"]?([A-Za-z0-9_.:]+)['\"]?\s+(?:is\s+)?(?:not|un)"),
]


def _conversion_error(exc: Exception) -> Exception:
    text = f"{type(exc).__name__}: {exc}"
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            return UnsupportedOpError(match.group(1), f"litert-torch failed: {text[:600]}; {TORCH_ALTERNATIVE}")
    return ModelLoadError(f"litert-torch could not convert the model: {text[:800]}\n{TORCH_ALTERNATIVE}")


def check_parity(reference: Any, tflite_path: Path, inputs: np.ndarray, nhwc: bool, tolerance: float = PARITY_TOLERANCE) -> float:
    """Max abs difference of the float TFLite against the source on ``inputs`` (NCHW); ParityError past tolerance."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outs = [d["index"] for d in interp.get_output_details()]
    worst = 0.0
    for x in inputs:
        batch = x[None]
        interp.set_tensor(inp, np.ascontiguousarray(batch.transpose(0, 2, 3, 1) if nhwc else batch))
        interp.invoke()
        got = [interp.get_tensor(i) for i in outs]
        expected = reference(batch)
        if len(got) != len(expected):
            raise ParityError(f"{tflite_path.name}: {len(got)} outputs, the source has {len(expected)}")
        for g, e in zip(got, expected, strict=True):
            worst = max(worst, float(np.abs(g.reshape(e.shape) - e).max()))
    if worst > tolerance:
        raise ParityError(
            f"{tflite_path.name}: outputs differ from the source model by up to {worst:.3g} "
            f"(tolerance {tolerance}); the converter produced a wrong graph or wrong weights"
        )
    return worst
