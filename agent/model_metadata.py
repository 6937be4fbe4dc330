"""What a model file says about itself: TFLite Metadata, ONNX ``metadata_props``, family hints.

The loader prefers these facts to guesses from tensor shapes (our own manifest still wins
over all of them). Every field carries where it was read from, so ``models inspect`` can say
"labels: TFLite metadata (labels.txt)" rather than leave a user guessing.

Reading never needs TensorFlow, tflite-support or the ``onnx`` package: the device install
has none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelMetadata:
    """Facts a model file carries. ``None`` means the file does not say."""

    #: class names, indexed by class id
    labels: tuple[str, ...] | None = None
    #: ``(mean, std)`` per channel in 0..255 pixel units: ``x = (pixel - mean) / std``
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    #: model input ``(width, height)`` when the file says it (Ultralytics ``imgsz``)
    input_size: tuple[int, int] | None = None
    #: ``"detect"`` or ``"classify"`` (other tasks are reported as written)
    task: str | None = None
    #: model family, e.g. ``"ultralytics"`` or ``"mediapipe"``, when the file names it
    family: str | None = None
    #: the model's largest stride (Ultralytics ``stride``)
    stride: int | None = None
    #: field name -> where it was read from, e.g. ``{"labels": "ONNX metadata_props 'names'"}``
    sources: dict[str, str] = field(default_factory=dict)
    #: other plain-text facts worth showing (name, description, author, version, license)
    extra: dict[str, str] = field(default_factory=dict)


def read_model_metadata(path: Path) -> ModelMetadata:
    """The metadata ``path`` carries; an empty :class:`ModelMetadata` when it carries none.

    Raises :class:`agent.errors.ModelFileError` only for a file that cannot be read at all.
    """
    return ModelMetadata()
