"""Ultralytics ``.pt`` checkpoints (YOLOv8 / YOLO11 / YOLOv5u detect) without the ``ultralytics`` package.

A checkpoint is a pickled dict whose ``model``/``ema`` is the training-time module tree. We unpickle it
with stand-in classes for every ``ultralytics.*`` name (so neither the AGPL package nor its version is
needed), keep the module tree and its weights as they are, and give each building block a forward pass
written here from the blocks' published semantics (Conv = act(bn(conv)), C2f/C3k2 split-and-extend,
SPPF chained max-pools, C2PSA attention, the DFL + dist2bbox detection head). The head's output is the
one Ultralytics exports for ONNX/TFLite: ``[1, 4 + nc, anchors]``, boxes as centre-x, centre-y, w, h in
input pixels, then class scores after the sigmoid. A block we have no forward for is named in the error,
with the ONNX route as the alternative.
"""

from __future__ import annotations

import pickle
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from converters.errors import ModelLoadError, UnsupportedOpError
from converters.toolchain import require

ONNX_ROUTE = "export ONNX with Ultralytics (yolo export model=best.pt format=onnx imgsz=N) and convert the .onnx file instead"


def is_ultralytics_checkpoint(path: Path) -> bool:
    """A torch.save zip whose pickle references ``ultralytics.nn`` classes."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            return member is not None and b"ultralytics.nn" in zf.read(member)
    except (zipfile.BadZipFile, OSError):
        return False


def _stand_ins() -> tuple[type, type]:
    torch = require("torch", why="Ultralytics .pt input")

    class UltralyticsBlock(torch.nn.Module):
        """Stand-in for any ``ultralytics.nn`` module: its attributes and weights come from the pickle."""

        def forward(self, x: Any) -> Any:
            block = type(self).__name__
            forward = _FORWARDS.get(block)
            if forward is None:
                raise UnsupportedOpError(f"ultralytics.{block}", f"no forward pass for this block here; {ONNX_ROUTE}")
            return forward(self, x)

    class Opaque:
        """Stand-in for any other ``ultralytics`` object in a checkpoint (namespaces, metrics): state only."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.__dict__["_args"] = args

        def __setstate__(self, state: Any) -> None:
            self.__dict__.update(state if isinstance(state, dict) else {"_state": state})

    return UltralyticsBlock, Opaque


def _pickle_module() -> types.ModuleType:
    """A ``pickle`` look-alike whose Unpickler maps ``ultralytics.*`` classes to stand-ins (for torch.load)."""
    block, opaque = _stand_ins()
    classes: dict[str, type] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module.split(".")[0] != "ultralytics":
                return super().find_class(module, name)
            key = f"{module}.{name}"
            if key not in classes:
                base = block if module.startswith("ultralytics.nn") else opaque
                classes[key] = type(name, (base,), {"__module__": "converters.ultralytics_pt.standin"})
            return classes[key]

    stub = types.ModuleType("ultralytics_standin_pickle")
    stub.Unpickler = Unpickler  # type: ignore[attr-defined]
    stub.load = pickle.load  # type: ignore[attr-defined]
    stub.__name__ = "pickle"  # torch.load inspects the name (dill check) only
    return stub


def load_checkpoint(path: Path) -> Any:
    """The checkpoint's detection model as an eval-mode float32 ``torch.nn.Module`` (``YoloNet``)."""
    torch = require("torch", why="Ultralytics .pt input")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_pickle_module())
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/UnpicklingError/zip errors for bad files
        raise ModelLoadError(f"cannot load {path} as an Ultralytics checkpoint: {type(exc).__name__}: {exc}") from None
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else ckpt
    if model is None or not hasattr(model, "model"):
        raise ModelLoadError(f"{path}: an Ultralytics checkpoint without a model ('ema' and 'model' are empty)")
    task = getattr(model, "task", None) or _args(ckpt, model).get("task", "detect")
    head = type(model.model[-1]).__name__
    if task != "detect" or head != "Detect":
        raise UnsupportedOpError(
            f"ultralytics.{head}",
            f"{path.name} is a {task!r} model ({head} head); only detect models convert from .pt here; {ONNX_ROUTE}",
        )
    return _yolo_net(torch)(model.float().eval(), _labels(model), _imgsz(ckpt, model))


def _args(ckpt: Any, model: Any) -> dict[str, Any]:
    args = ckpt.get("train_args") if isinstance(ckpt, dict) else None
    args = args or getattr(model, "args", None) or {}
    return dict(args) if isinstance(args, dict) else dict(vars(args))


def _labels(model: Any) -> tuple[str, ...] | None:
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        return tuple(str(names[k]) for k in sorted(names))
    return tuple(str(n) for n in names) if isinstance(names, list | tuple) else None


def _imgsz(ckpt: Any, model: Any) -> tuple[int, int] | None:
    size = _args(ckpt, model).get("imgsz")
    if isinstance(size, int):
        return size, size
    if isinstance(size, list | tuple) and len(size) == 2:
        return int(size[1]), int(size[0])  # Ultralytics writes [height, width]
    return None


def _yolo_net(torch: Any) -> Callable[..., Any]:
    class YoloNet(torch.nn.Module):
        """The checkpoint's layer list run in its ``from`` order (the training model's own routing)."""

        def __init__(self, model: Any, labels: tuple[str, ...] | None, imgsz: tuple[int, int] | None) -> None:
            super().__init__()
            self.layers = model.model
            head = model.model[-1]
            head.stride_values = [float(v) for v in head.stride]  # plain floats: torch.export cannot guard on tensor data
            self.save = set(int(i) for i in getattr(model, "save", []))
            self.labels = labels
            self.input_size = imgsz

        def forward(self, x: Any) -> Any:
            saved: list[Any] = []
            for layer in self.layers:
                if layer.f != -1:
                    x = saved[layer.f] if isinstance(layer.f, int) else [x if j == -1 else saved[j] for j in layer.f]
                x = layer(x)
                saved.append(x if layer.i in self.save else None)
            return x

    return YoloNet


# ---- forward passes of the building blocks (semantics of Ultralytics' nn.modules) ---------------------


def _conv(m: Any, x: Any) -> Any:
    x = m.conv(x)
    if "bn" in m._modules:  # a fused checkpoint has folded the batch norm into the conv
        x = m.bn(x)
    return m.act(x)


def _c2f(m: Any, x: Any) -> Any:
    import torch

    y = list(m.cv1(x).chunk(2, 1))
    y.extend(block(y[-1]) for block in m.m)
    return m.cv2(torch.cat(y, 1))


def _c3(m: Any, x: Any) -> Any:
    import torch

    return m.cv3(torch.cat((m.m(m.cv1(x)), m.cv2(x)), 1))


def _bottleneck(m: Any, x: Any) -> Any:
    y = m.cv2(m.cv1(x))
    return x + y if m.add else y


def _sppf(m: Any, x: Any) -> Any:
    import torch

    y = [m.cv1(x)]
    y.extend(m.m(y[-1]) for _ in range(getattr(m, "n", 3)))
    out = m.cv2(torch.cat(y, 1))
    return out + x if getattr(m, "add", False) else out


def _concat(m: Any, x: Any) -> Any:
    import torch

    return torch.cat(x, m.d)


def _c2psa(m: Any, x: Any) -> Any:
    import torch

    a, b = m.cv1(x).split((m.c, m.c), dim=1)
    return m.cv2(torch.cat((a, m.m(b)), 1))


def _psa_block(m: Any, x: Any) -> Any:
    x = x + m.attn(x) if m.add else m.attn(x)
    return x + m.ffn(x) if m.add else m.ffn(x)


def _attention(m: Any, x: Any) -> Any:
    b, c, h, w = x.shape
    q, k, v = m.qkv(x).view(b, m.num_heads, m.key_dim * 2 + m.head_dim, h * w).split([m.key_dim, m.key_dim, m.head_dim], dim=2)
    attn = ((q * m.scale).transpose(-2, -1) @ k).softmax(dim=-1)
    y = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + m.pe(v.reshape(b, c, h, w))
    return m.proj(y)


def _dfl(m: Any, x: Any) -> Any:
    b, _, a = x.shape
    return m.conv(x.view(b, 4, m.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def _detect(m: Any, feats: list[Any]) -> Any:
    import torch

    if m._modules.get("cv2") is None:
        raise UnsupportedOpError(
            "ultralytics.Detect (end-to-end head only)", f"this checkpoint has only the NMS-free head; {ONNX_ROUTE}"
        )
    if getattr(m, "xyxy", False):
        raise UnsupportedOpError("ultralytics.Detect (xyxy boxes)", f"a head that outputs corner boxes; {ONNX_ROUTE}")
    n = feats[0].shape[0]
    boxes = torch.cat([m.cv2[i](f).view(n, 4 * m.reg_max, -1) for i, f in enumerate(feats)], -1)
    scores = torch.cat([m.cv3[i](f).view(n, m.nc, -1) for i, f in enumerate(feats)], -1)
    points, strides = [], []
    for i, f in enumerate(feats):  # grid-cell centres of every level, in that level's cells; shapes are static
        h, w = int(f.shape[2]), int(f.shape[3])
        sy, sx = torch.meshgrid(torch.arange(h, dtype=f.dtype) + 0.5, torch.arange(w, dtype=f.dtype) + 0.5, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        strides.append(torch.full((h * w, 1), m.stride_values[i], dtype=f.dtype))
    anchors = torch.cat(points).transpose(0, 1).unsqueeze(0)  # [1, 2, A]
    stride = torch.cat(strides).transpose(0, 1)  # [1, A]
    lt, rb = m.dfl(boxes).chunk(2, 1)
    x1y1, x2y2 = anchors - lt, anchors + rb
    box = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1)  # centre x/y, w, h: the YOLOv8 output the agent decodes
    return torch.cat((box * stride, scores.sigmoid()), 1)


_FORWARDS: dict[str, Callable[[Any, Any], Any]] = {
    "Conv": _conv,
    "DWConv": _conv,
    "C2f": _c2f,
    "C3k2": _c2f,
    "C3": _c3,
    "C3k": _c3,
    "Bottleneck": _bottleneck,
    "SPPF": _sppf,
    "Concat": _concat,
    "C2PSA": _c2psa,
    "PSABlock": _psa_block,
    "Attention": _attention,
    "DFL": _dfl,
    "Detect": _detect,
}
