"""The decoder contract: raw output tensors in, boxes normalized to the model input out.

A decoder is built once per loaded model from the manifest's decoder spec and the backend's
output tensor descriptions (it checks the shapes then, so a wrong model fails at load, not
on the first frame), and then called once per frame with the output arrays. Output arrays
may be views into runtime memory that die at the next invoke: a decoder copies out only
what it keeps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import BaseModel

from agent.manifest import Thresholds


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One model input or output as the runtime describes it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0  # per-tensor quantization; 0.0 means not quantized
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype in (np.dtype(np.int8), np.dtype(np.uint8))


@dataclass(slots=True)
class DecodedOutput:
    """Detections in model-input coordinates, normalized to 0..1 (x1, y1, x2, y2).

    For classifiers ``boxes`` is None and the rows are the top-k classes.
    """

    boxes: np.ndarray | None  # (K, 4) float32
    scores: np.ndarray  # (K,) float32, sorted descending
    class_ids: np.ndarray  # (K,) int64


class Decoder(ABC):
    """A plugin: one subclass per file in ``agent/decoders/``."""

    type_key: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]  # the manifest's decoder spec class for this type

    def __init__(
        self,
        spec: BaseModel,
        outputs: Sequence[TensorInfo],
        input_size: tuple[int, int],
        num_classes: int,
        thresholds: Thresholds,
    ) -> None:
        """Validate the outputs against the spec; raise DecoderError naming the tensor and shape."""
        self.spec = spec
        self.outputs = tuple(outputs)
        self.input_width, self.input_height = input_size
        self.num_classes = num_classes
        self.thresholds = thresholds
        self._bind()

    @abstractmethod
    def _bind(self) -> None:
        """Check ``self.outputs`` against the spec and precompute what ``decode`` needs.

        Raise DecoderError naming the tensor, its shape and what was expected.
        """

    @abstractmethod
    def decode(self, outputs: Sequence[np.ndarray]) -> DecodedOutput:
        """Decode one frame's outputs (same order as ``self.outputs``)."""

    @classmethod
    def guess(cls, outputs: Sequence[TensorInfo], num_classes: int | None) -> BaseModel | None:
        """A decoder spec if the outputs look like this decoder's format, else None."""
        return None

    def set_thresholds(self, thresholds: Thresholds) -> None:
        """Change thresholds at run time (remote command); takes effect on the next frame."""
        self.thresholds = thresholds
