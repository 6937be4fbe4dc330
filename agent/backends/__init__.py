"""Inference backends, one file each: ``litert`` (TFLite) and ``onnxruntime``."""

from __future__ import annotations

from pathlib import Path

import agent.backends as _pkg
from agent.backends.base import Backend, BackendOptions, default_threads
from agent.errors import ModelFileError
from agent.registry import Registry

BACKENDS: Registry[Backend] = Registry(_pkg, Backend)

__all__ = ["BACKENDS", "Backend", "BackendOptions", "backend_for", "default_threads", "open_backend"]


def backend_for(model_path: Path) -> type[Backend]:
    suffix = model_path.suffix.lower()
    for _, cls in BACKENDS.items():
        if suffix in cls.suffixes:
            return cls
    known = sorted({s for _, c in BACKENDS.items() for s in c.suffixes})
    raise ModelFileError(f"{model_path}: unknown model format {suffix!r}; expected one of {', '.join(known)}")


def open_backend(model_path: Path, options: BackendOptions | None = None, backend: str | None = None) -> Backend:
    """Load ``model_path`` with the named backend, or the one its suffix implies."""
    if not model_path.is_file():
        raise ModelFileError(f"model file {model_path} does not exist (check model.path in the config)")
    cls = BACKENDS.get(backend) if backend else backend_for(model_path)
    return cls(model_path, options or BackendOptions())
