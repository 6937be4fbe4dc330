"""The inference backend contract: a model with one input buffer we write into in place.

The pipeline never hands a backend an array to copy: it asks for ``input_array()`` (a view
of the runtime's own input buffer, or the array bound to it) and writes the preprocessed
frame there. ``output_arrays()`` likewise returns the runtime's output memory; both are
valid only until the next ``invoke()``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.decoders.base import TensorInfo
from agent.errors import ManifestError


def default_threads() -> int:
    """Cores minus one (capture, MQTT and the OS keep one), at least 1."""
    return max(1, (os.cpu_count() or 1) - 1)


class BackendOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int = Field(default_factory=default_threads, ge=1, description="Inference threads (always set explicitly).")
    delegate: str | None = Field(
        None, description="TFLite only: path or name of a delegate library (e.g. libedgetpu.so.1); CPU if it fails."
    )
    delegate_options: dict[str, str] = Field(default_factory=dict, description="Options passed to the delegate.")
    input_size: tuple[int, int] | None = Field(
        None, description="(width, height) for the dynamic spatial axes of a model input; static axes keep their size."
    )


#: a dimension as the file declares it: a size, a symbolic name (ONNX), or -1 (dynamic, unnamed)
Dim = int | str


@dataclass(frozen=True, slots=True)
class DeclaredTensor:
    """A tensor as the model file declares it, before any size is fixed (what ``models inspect`` shows)."""

    name: str
    dims: tuple[Dim, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def dynamic(self) -> bool:
        return any(not isinstance(d, int) or d < 1 for d in self.dims)


def _is_static(dim: Dim) -> bool:
    return isinstance(dim, int) and dim > 0


def fixed_input_shape(tensor: DeclaredTensor, input_size: tuple[int, int] | None, model_path: Path) -> tuple[int, ...]:
    """The concrete shape a (possibly dynamic) image input runs at: batch 1, spatial axes from ``input_size``.

    Static axes keep their declared size. The channel axis (a static 1 or 3) tells NCHW from NHWC.
    Raises ManifestError naming the tensor and every place an input size can come from.
    """
    dims = tensor.dims
    if not tensor.dynamic:
        return tuple(int(d) for d in dims)
    rank_error = (
        f"{model_path}: input {tensor.name!r} has dynamic axes {list(dims)}; only 4-D image inputs "
        "([N, C, H, W] or [N, H, W, C]) with a dynamic batch or size are supported"
    )
    if len(dims) != 4:
        if all(_is_static(d) for d in dims[1:]):
            return (1, *(int(d) for d in dims[1:]))  # only the batch axis is dynamic
        raise ManifestError(rank_error)
    if _is_static(dims[1]) and dims[1] in (1, 3) and not (_is_static(dims[3]) and dims[3] in (1, 3)):
        spatial = (2, 3)  # NCHW
    elif _is_static(dims[3]) and dims[3] in (1, 3):
        spatial = (1, 2)  # NHWC
    else:
        raise ManifestError(
            f"{model_path}: input {tensor.name!r} has shape {list(dims)}: cannot tell the channel axis (neither axis 1 "
            "nor axis 3 is a static 1 or 3); write a manifest (model.json) with input.layout"
        )
    shape = [1, *(int(d) if _is_static(d) else 0 for d in dims[1:])]
    needs = [axis for axis in spatial if not _is_static(dims[axis])]
    if needs and input_size is None:
        raise ManifestError(
            f"{model_path}: input {tensor.name!r} has dynamic size {list(dims)} and nothing gives the size to run it at: "
            "the config has no model.input_size, there is no manifest with input.width/input.height, and the model's "
            "metadata has no input size (Ultralytics exports write imgsz). Set model.input_size in the config "
            "(e.g. [640, 640] as width, height, or 640 for square)."
        )
    if needs:
        assert input_size is not None
        width, height = input_size
        shape[spatial[0]], shape[spatial[1]] = (
            int(dims[spatial[0]]) if _is_static(dims[spatial[0]]) else height,
            int(dims[spatial[1]]) if _is_static(dims[spatial[1]]) else width,
        )
    if any(d < 1 for d in shape):
        raise ManifestError(rank_error)
    return tuple(shape)


class Backend(ABC):
    """A plugin: one subclass per file in ``agent/backends/``."""

    type_key: ClassVar[str]
    #: model file suffixes this backend runs
    suffixes: ClassVar[tuple[str, ...]]

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        self.model_path = model_path
        self.options = options
        self.delegate_in_use: str | None = None

    @classmethod
    @abstractmethod
    def declared_tensors(cls, model_path: Path) -> tuple[list[DeclaredTensor], list[DeclaredTensor]]:
        """Inputs and outputs as the file declares them (symbolic dims kept); needs no input size.

        Raises ModelFileError for a file the runtime cannot read.
        """

    @property
    @abstractmethod
    def input(self) -> TensorInfo: ...

    @property
    @abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    @abstractmethod
    def input_array(self) -> np.ndarray:
        """Writable array backed by the model's input memory (full shape, batch included).

        Do not keep it past the next ``invoke()``.
        """

    @abstractmethod
    def invoke(self) -> None: ...

    @abstractmethod
    def output_arrays(self) -> list[np.ndarray]:
        """The outputs of the last ``invoke()``, in ``outputs`` order; valid until the next one."""

    @abstractmethod
    def fork(self) -> Backend:
        """A second execution context on the same model with its own input/output memory.

        The pipeline alternates two contexts so one frame is preprocessed (into the other
        context's input) and the previous one decoded while this one invokes.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the runtime's resources."""
