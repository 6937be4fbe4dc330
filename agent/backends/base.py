"""The inference backend contract: a model with one input buffer we write into in place.

The pipeline never hands a backend an array to copy: it asks for ``input_array()`` (a view
of the runtime's own input buffer, or the array bound to it) and writes the preprocessed
frame there. ``output_arrays()`` likewise returns the runtime's output memory; both are
valid only until the next ``invoke()``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.decoders.base import TensorInfo


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


class Backend(ABC):
    """A plugin: one subclass per file in ``agent/backends/``."""

    type_key: ClassVar[str]
    #: model file suffixes this backend runs
    suffixes: ClassVar[tuple[str, ...]]

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        self.model_path = model_path
        self.options = options
        self.delegate_in_use: str | None = None

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
