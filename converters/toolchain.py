"""Optional toolchains: imported lazily, and a missing one names the extra that installs it."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from types import ModuleType

from converters.errors import ToolchainMissingError

#: import name -> (distribution, extra that installs it)
TOOLCHAIN = {
    "torch": ("torch", "convert-torch"),
    "litert_torch": ("litert-torch", "convert-torch"),
    "ai_edge_quantizer": ("ai-edge-quantizer", "convert-torch"),
    "tensorflow": ("tensorflow-cpu", "convert-tf"),
    "onnx2tf": ("onnx2tf", "convert-onnx"),
    "onnx": ("onnx", "convert-onnx"),
    "faster_coco_eval": ("faster-coco-eval", "convert"),
    "matplotlib": ("matplotlib", "convert"),
}

VERSIONED = [
    "edge-agent",
    "torch",
    "litert-torch",
    "litert-converter",
    "ai-edge-quantizer",
    "ai-edge-litert",
    "tensorflow-cpu",
    "tensorflow",
    "tf-keras",
    "onnx2tf",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "numpy",
]


def require(module: str, extra: str | None = None, why: str = "") -> ModuleType:
    """Import ``module`` or raise ToolchainMissingError with the ``pip install`` line that fixes it."""
    dist, default_extra = TOOLCHAIN.get(module, (module, "convert"))
    extra = extra or default_extra
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f" ({why})" if why else ""
        raise ToolchainMissingError(
            f"{dist} is not installed in this Python{reason}: {exc}.\n"
            f"Install the converter toolchain:  pip install 'edge-agent[{extra}]'"
        ) from None


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def tool_versions() -> dict[str, str]:
    """Installed versions of the tools that shape a conversion (recorded in the manifest)."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
