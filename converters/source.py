"""The source model as a plain function on numpy arrays, whatever its kind (the reference for parity and reports)."""

from __future__ import annotations

import json
import types
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.manifest import Layout
from converters.errors import ModelLoadError, OptionError
from converters.kinds import InputKind
from converters.toolchain import require

Forward = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(slots=True)
class SourceModel:
    kind: InputKind
    name: str
    layout: Layout  # the source's own input layout
    input_shape: tuple[int, ...]  # batch 1, in ``layout``
    forward: Forward
    handle: Any  # the loaded model object (torch module, onnx path, keras model)
    labels: tuple[str, ...] | None = None  # class names the source carries (an Ultralytics checkpoint's names)


def load_source(model: str, kind: InputKind, input_size: tuple[int, int] | None, weights: Path | None) -> SourceModel:
    name = Path(model.split(":")[-1]).stem if kind is InputKind.torch_factory else Path(model).stem
    if kind in (
        InputKind.torch_factory,
        InputKind.torch_pickle,
        InputKind.torchscript,
        InputKind.exported_program,
        InputKind.ultralytics_pt,
    ):
        from converters.torch_path import load_torch_model, torch_forward

        net = load_torch_model(model, kind, weights)
        extra = _torchscript_config(Path(model)) if kind is InputKind.torchscript else {}
        size = input_size or _size_attr(net) or _size_attr(types.SimpleNamespace(input_size=_hw_to_wh(extra.get("imgsz"))))
        if size is None:
            raise OptionError("a PyTorch model has no fixed input size: pass --input-size WxH (e.g. 640 or 640x480)")
        w, h = size
        labels = getattr(net, "labels", None) or _names(extra.get("names"))
        return SourceModel(kind, name, Layout.NCHW, (1, 3, h, w), torch_forward(net), net, labels)
    if kind is InputKind.onnx:
        return _onnx_source(model, name, input_size)
    return _tf_source(model, kind, name, input_size)


def _torchscript_config(path: Path) -> dict[str, Any]:
    """The ``extra/config.txt`` JSON Ultralytics' TorchScript export carries (names, imgsz); {} when absent."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("/extra/config.txt")), None)
            data = json.loads(zf.read(member)) if member else {}
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _hw_to_wh(imgsz: Any) -> Any:
    """Ultralytics writes imgsz as [height, width]."""
    return (imgsz[1], imgsz[0]) if isinstance(imgsz, list | tuple) and len(imgsz) == 2 else imgsz


def _names(names: Any) -> tuple[str, ...] | None:
    if isinstance(names, dict):
        return tuple(str(names[k]) for k in sorted(names, key=lambda k: int(k)))
    return tuple(str(n) for n in names) if isinstance(names, list) else None


def _size_attr(net: Any) -> tuple[int, int] | None:
    size = getattr(net, "input_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, tuple | list) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def _onnx_source(model: str, name: str, input_size: tuple[int, int] | None) -> SourceModel:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises pybind exception types
        raise ModelLoadError(f"{model} cannot be loaded by ONNX Runtime (truncated or corrupt?): {exc}") from None
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise OptionError(f"{model} has {len(inputs)} inputs; convert-to-tflite handles single-image-input models")
    shape = list(inputs[0].shape)
    if len(shape) != 4:
        raise OptionError(f"{model}: input {inputs[0].name!r} has shape {shape}; a 4-D image input is expected")
    nchw = shape[1] in (1, 3)
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    h, w = (dims[2], dims[3]) if nchw else (dims[1], dims[2])
    if input_size is not None:
        if (w is not None and w != input_size[0]) or (h is not None and h != input_size[1]):
            raise OptionError(
                f"--input-size {input_size[0]}x{input_size[1]} contradicts {model}, whose input is fixed at "
                f"{w}x{h} (shape {shape}): omit --input-size, or re-export the model at that size or with "
                "dynamic axes"
            )
        w, h = input_size
    if w is None or h is None:
        raise OptionError(f"{model} has a dynamic input size {shape}: pass --input-size WxH")
    channels = shape[1] if nchw else shape[3]
    in_shape = (1, channels, h, w) if nchw else (1, h, w, channels)
    input_name = inputs[0].name
    return SourceModel(
        InputKind.onnx,
        name,
        Layout.NCHW if nchw else Layout.NHWC,
        in_shape,
        lambda x: list(sess.run(None, {input_name: x})),
        model,
    )


def _tf_source(model: str, kind: InputKind, name: str, input_size: tuple[int, int] | None) -> SourceModel:
    tf = require("tensorflow", why="Keras / SavedModel input")
    try:
        if kind is InputKind.keras:
            net = tf.keras.models.load_model(model, compile=False)
            shape = tuple(net.inputs[0].shape)
            fn = net
        else:
            loaded = tf.saved_model.load(model)
            fn = loaded.signatures["serving_default"]
            spec = next(iter(fn.structured_input_signature[1].values()))
            shape = tuple(spec.shape)
            net = loaded
    except Exception as exc:  # noqa: BLE001 - Keras/TF raise many types for bad files
        raise ModelLoadError(f"cannot load {model} as {kind.value}: {type(exc).__name__}: {exc}") from None
    h, w = shape[1], shape[2]
    if input_size is not None:
        w, h = input_size
    if not h or not w:
        raise OptionError(f"{model} has a dynamic input size {shape}: pass --input-size WxH")

    def forward(x: np.ndarray) -> list[np.ndarray]:
        out = fn(tf.constant(x))
        if isinstance(out, dict):
            out = [out[k] for k in sorted(out)]
        outs = out if isinstance(out, list | tuple) else [out]
        return [np.asarray(o) for o in outs]

    return SourceModel(kind, name, Layout.NHWC, (1, int(h), int(w), int(shape[3] or 3)), forward, net)
