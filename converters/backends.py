"""The source model behind the agent's Backend interface, so it gets the agent's own preprocessing and decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.backends.base import Backend, BackendOptions, DeclaredTensor
from agent.decoders.base import TensorInfo
from agent.manifest import InputSpec, TensorDType
from converters.source import SourceModel


class SourceBackend(Backend):
    """Runs ``SourceModel.forward`` on an input array shaped like the source's own input."""

    type_key = "source"
    suffixes = ()

    def __init__(self, source: SourceModel, output_shapes: list[tuple[int, ...]]) -> None:
        super().__init__(Path(source.name), BackendOptions(threads=1))
        self.source = source
        self._input = np.zeros(source.input_shape, np.float32)
        self._outputs: list[np.ndarray] = [np.zeros(s, np.float32) for s in output_shapes]

    @classmethod
    def declared_tensors(cls, model_path: Path) -> tuple[list[DeclaredTensor], list[DeclaredTensor]]:
        """Not meaningful here: the source runs in memory, there is no file of ours to inspect."""
        raise NotImplementedError("the converters' source backend runs an in-memory model; it declares no file tensors")

    @property
    def input(self) -> TensorInfo:
        return TensorInfo("input", tuple(self.source.input_shape), np.dtype(np.float32))

    @property
    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(f"output{i}", tuple(o.shape), np.dtype(np.float32)) for i, o in enumerate(self._outputs)]

    def input_array(self) -> np.ndarray:
        return self._input

    def invoke(self) -> None:
        self._outputs = [np.asarray(o, np.float32) for o in self.source.forward(self._input)]

    def output_arrays(self) -> list[np.ndarray]:
        return self._outputs

    def fork(self) -> Backend:
        return SourceBackend(self.source, [tuple(o.shape) for o in self._outputs])


def source_input_spec(converted: InputSpec, source: SourceModel) -> InputSpec:
    """The converted model's input contract, in the source's layout and float32."""
    return converted.model_copy(update={"layout": source.layout, "dtype": TensorDType.float32})
