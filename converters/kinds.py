"""What the MODEL argument is: detected from the file itself (magic bytes), not trusted from the suffix alone."""

from __future__ import annotations

import zipfile
from enum import StrEnum
from pathlib import Path

from converters.errors import ModelLoadError, UnknownInputKindError


class InputKind(StrEnum):
    torch_factory = "torch-factory"  # "package.module:callable" (+ optional --weights state dict)
    torch_pickle = "torch-pickle"  # torch.save(model)
    ultralytics_pt = "ultralytics-pt"  # an Ultralytics checkpoint (best.pt): loaded without the ultralytics package
    torchscript = "torchscript"  # torch.jit.save
    exported_program = "exported-program"  # torch.export.save (.pt2)
    onnx = "onnx"
    keras = "keras"  # .keras (zip) or .h5
    saved_model = "saved-model"  # directory with saved_model.pb


#: which toolchain each kind needs (the converter path)
PATH_OF_KIND = {
    InputKind.torch_factory: "litert-torch",
    InputKind.torch_pickle: "litert-torch",
    InputKind.ultralytics_pt: "litert-torch",
    InputKind.torchscript: "litert-torch",
    InputKind.exported_program: "litert-torch",
    InputKind.onnx: "onnx2tf",
    InputKind.keras: "tflite-converter",
    InputKind.saved_model: "tflite-converter",
}

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def detect_kind(model: str) -> InputKind:
    """The input kind of ``model`` (a path or ``module:callable``); raises UnknownInputKindError/ModelLoadError."""
    path = Path(model)
    if not path.exists():
        if ":" in model and not model.startswith(("/", ".")) and all(part for part in model.split(":", 1)):
            return InputKind.torch_factory
        raise UnknownInputKindError(
            f"{model}: no such file or directory, and not a 'package.module:callable' factory.\n"
            "Pass a model file (.pt/.pth TorchScript or pickled module, .pt2 ExportedProgram, .onnx, .keras/.h5), "
            "a TF SavedModel directory, or a factory such as 'mypkg.models:build' (with --weights state_dict.pt)."
        )
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return InputKind.saved_model
        raise UnknownInputKindError(f"{path} is a directory without saved_model.pb: not a TF SavedModel")
    head = path.read_bytes()[:8] if path.stat().st_size else b""
    if not head:
        raise ModelLoadError(f"{path} is empty (0 bytes)")
    suffix = path.suffix.lower()
    if head.startswith(_HDF5_MAGIC):
        return InputKind.keras
    if head.startswith(b"PK"):
        return _zip_kind(path)
    if suffix == ".onnx" or _looks_like_onnx(head):
        return InputKind.onnx
    if suffix in (".pt", ".pth", ".bin") and head[:2] == b"\x80\x02":
        return InputKind.torch_pickle  # legacy (non-zip) torch.save
    raise UnknownInputKindError(
        f"{path}: unknown model format (suffix {suffix or 'none'!r}, first bytes {head!r}).\n"
        "Supported: TorchScript / pickled torch module (.pt), ExportedProgram (.pt2), ONNX (.onnx), "
        "Keras (.keras/.h5), TF SavedModel (directory), or a 'module:callable' factory."
    )


def _zip_kind(path: Path) -> InputKind:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"{path} looks like a zip archive but is truncated or corrupt: {exc}") from None
    if any(n == "config.json" or n.endswith("/config.json") for n in names) and any(
        n.endswith("model.weights.h5") for n in names
    ):
        return InputKind.keras
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names) and not any(
        "serialized_exported_program" in n or n.endswith("models/model.json") for n in names
    ):
        return InputKind.torchscript
    if any("serialized_exported_program" in n or "/models/" in n for n in names):
        return InputKind.exported_program
    if any(n.endswith("/data.pkl") for n in names):
        from converters.ultralytics_pt import is_ultralytics_checkpoint

        return InputKind.ultralytics_pt if is_ultralytics_checkpoint(path) else InputKind.torch_pickle
    raise UnknownInputKindError(f"{path}: a zip archive, but not a Keras, TorchScript, ExportedProgram or torch.save file")


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint): tag 0x08
    return head[:1] == b"\x08" and len(head) > 1 and 3 <= head[1] <= 12
