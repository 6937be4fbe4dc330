"""What a model file says about itself: TFLite Metadata, ONNX ``metadata_props``, family hints.

The loader prefers these facts to guesses from tensor shapes (our own manifest still wins
over all of them). Every field carries where it was read from, so ``models inspect`` can say
"labels: TFLite metadata (labels.txt)" rather than leave a user guessing.

Reading never needs TensorFlow, tflite-support or the ``onnx`` package: the device install
has none of them. The .tflite flatbuffers are read by hand (:mod:`agent._flatbuffer`), the
ONNX ``ModelProto`` by a top-level protobuf scan that skips the graph (:mod:`agent._protobuf`).

Sources understood:

- TFLite Metadata (tflite-support's ``metadata_schema.fbs``, the model's ``metadata`` entry
  named ``TFLITE_METADATA``): name, description, version, author, license; the input
  tensor's ``NormalizationOptions`` (mean/std) and ``stats`` (the value range the model
  expects); the label file (``TENSOR_AXIS_LABELS`` / ``TENSOR_VALUE_LABELS``) of an output
  tensor, read from the zip appended to the model. The Task Library applies the
  normalization to float inputs only; a uint8 input is fed raw pixels.
- Ultralytics: ``metadata_props`` of an ONNX export, or the ``metadata.json`` zip member of a
  TFLite export: ``names`` (a Python dict literal in ONNX), ``imgsz`` (``[h, w]``), ``task``,
  ``stride``, and plain facts (author, version, ``batch``, ``end2end``, ...).

Malformed metadata never fails a load: the field is dropped with a warning naming the file and key.
"""

from __future__ import annotations

import ast
import json
import logging
import mmap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent._flatbuffer import FlatbufferError, Table, root_table
from agent._protobuf import message_fields
from agent.errors import ModelFileError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelMetadata:
    """Facts a model file carries. ``None`` means the file does not say."""

    #: class names, indexed by class id
    labels: tuple[str, ...] | None = None
    #: ``(mean, std)`` per channel in 0..255 pixel units: ``x = (pixel - mean) / std``; one value means every channel
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
    #: ``(min, max)`` of the input tensor's values (TFLite metadata ``stats``): ``(-1, 1)`` for a float model fed
    #: ``(pixel - 127.5) / 127.5``, ``(0, 255)`` for a uint8 input fed raw pixels
    input_range: tuple[float, float] | None = None
    #: input colour space the metadata declares (``"RGB"`` or ``"GRAYSCALE"``)
    color_space: str | None = None

    def __bool__(self) -> bool:
        """False when the file said nothing at all."""
        return bool(self.sources or self.extra)


def read_model_metadata(path: Path) -> ModelMetadata:
    """The metadata ``path`` carries; an empty :class:`ModelMetadata` when it carries none.

    Raises :class:`agent.errors.ModelFileError` only for a file that cannot be read at all.
    """
    suffix = path.suffix.lower()
    if suffix not in (".tflite", ".onnx"):
        return ModelMetadata()
    try:
        with path.open("rb") as handle:
            if path.stat().st_size == 0:
                return ModelMetadata()
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                fields = _Fields(path)
                if suffix == ".tflite":
                    _read_tflite(data, path, fields)
                else:
                    _read_onnx(data, fields)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc} (check model.path and permissions)") from None
    return fields.build()


class _Fields:
    """Collects fields as they are found; the first source to give a field keeps it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.extra: dict[str, str] = {}

    def set(self, name: str, value: Any, source: str) -> None:
        if value is not None and name not in self.values:
            self.values[name] = value
            self.sources[name] = source

    def note(self, key: str, value: object) -> None:
        text = str(value).strip()
        if text and key not in self.extra:
            self.extra[key] = text

    def warn(self, where: str, value: object, reason: str) -> None:
        """One warning naming the file, the metadata key (and its value when there is one) and what is wrong."""
        shown = "" if value is None else repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        log.warning("%s: ignoring model metadata %s%s: %s", self.path, where, f" = {shown}" if shown else "", reason)

    def build(self) -> ModelMetadata:
        return ModelMetadata(sources=self.sources, extra=self.extra, **self.values)


# --- TFLite ---------------------------------------------------------------------------------------

_TFLITE_METADATA = "TFLITE_METADATA"
_LABEL_FILE_TYPES = {2: "TENSOR_AXIS_LABELS", 3: "TENSOR_VALUE_LABELS"}
_COLOR_SPACES = {1: "RGB", 2: "GRAYSCALE"}
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES, _BOUNDING_BOX_PROPERTIES = 1, 2, 3  # ContentProperties union members
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union member


def _read_tflite(data: mmap.mmap, path: Path, fields: _Fields) -> None:
    """TFLite Metadata, then an Ultralytics ``metadata.json`` zip member."""
    try:
        model = root_table(data, 0, b"TFL3")
        buffers = model.tables(4)
        for entry in model.tables(6):
            if entry.string(0) == _TFLITE_METADATA:
                index = entry.scalar(1, "I")
                if index >= len(buffers):
                    raise FlatbufferError(f"metadata buffer index {index} is past the model's {len(buffers)} buffers")
                _read_tflite_metadata(_buffer_bytes(data, buffers[index]), fields)
    except FlatbufferError as exc:
        fields.warn(_TFLITE_METADATA, None, f"not a readable TFLite flatbuffer ({exc})")
    _read_tflite_zip(path, fields)


def _buffer_bytes(data: mmap.mmap, buffer: Table) -> bytes:
    """A ``Buffer``'s bytes: inline ``data``, or ``offset``/``size`` into the file (models over 2 GB)."""
    inline = buffer.bytes(0)
    if inline:
        return inline
    offset, size = buffer.scalar(1, "Q"), buffer.scalar(2, "Q")
    if offset > 1 and offset + size <= len(data):
        return bytes(data[offset : offset + size])
    raise FlatbufferError("the metadata buffer is empty")


def _read_tflite_metadata(blob: bytes, fields: _Fields) -> None:
    meta = root_table(blob, 0, b"M001")
    for slot, key in ((0, "name"), (1, "description"), (2, "version"), (4, "author"), (5, "license")):
        fields.note(key, meta.string(slot) or "")
    subgraphs = meta.tables(3)
    if not subgraphs:
        return
    subgraph = subgraphs[0]
    inputs, outputs = subgraph.tables(2), subgraph.tables(3)
    try:
        if inputs:
            _read_input_tensor(inputs[0], fields)
    except FlatbufferError as exc:  # one damaged section must not hide the others
        fields.warn("input tensor metadata", None, str(exc))
    try:
        _read_output_tensors(outputs, fields)
    except FlatbufferError as exc:
        fields.warn("output tensor metadata", None, str(exc))


def _read_output_tensors(outputs: list[Table], fields: _Fields) -> None:
    """Task (from what the outputs hold) and the label file of an output tensor."""
    kinds = [content.scalar(0, "B") if (content := tensor.table(3)) is not None else 0 for tensor in outputs]
    if _BOUNDING_BOX_PROPERTIES in kinds:
        fields.set("task", "detect", f"TFLite metadata (output {kinds.index(_BOUNDING_BOX_PROPERTIES)} holds bounding boxes)")
    elif kinds and kinds[0] == _IMAGE_PROPERTIES:  # an image out: a segmentation mask
        fields.set("task", "segment", "TFLite metadata (output 0 is an image)")
    label_files = [(pos, f) for pos, t in enumerate(outputs) for f in t.tables(6) if f.scalar(2, "b") in _LABEL_FILE_TYPES]
    if not label_files:
        return
    # a file without a locale is the default; translated copies carry one
    position, chosen = min(label_files, key=lambda item: (bool(item[1].string(3)), item[0]))
    name = chosen.string(0) or ""
    labels = _zip_labels(fields, name)
    if labels is not None:
        fields.set("labels", labels, f"TFLite metadata ({name}, output {position})")
    if len(outputs) == 1 and kinds[0] in (0, _FEATURE_PROPERTIES) and chosen.scalar(2, "b") == 2:
        fields.set("task", "classify", "TFLite metadata (one feature output with axis labels)")


def _read_input_tensor(tensor: Table, fields: _Fields) -> None:
    """Normalization, value range and colour space of the (first) image input."""
    for unit in tensor.tables(4):
        if unit.scalar(0, "B") != _NORMALIZATION_OPTIONS:
            continue
        options = unit.union(1)
        mean, std = options.floats(0), options.floats(1)
        problem = _normalization_problem(mean, std)
        if problem:
            fields.warn("NormalizationOptions", {"mean": mean, "std": std}, problem)
        else:
            fields.set("normalization", _broadcast(mean, std), "TFLite metadata NormalizationOptions")
    stats = tensor.table(5)
    if stats is not None:
        high, low = stats.floats(0), stats.floats(1)
        if high and len(high) == len(low) and all(h > lo for h, lo in zip(high, low, strict=True)):
            # per-channel ranges (MediaPipe writes three equal ones): the span they cover together
            fields.set("input_range", (min(low), max(high)), "TFLite metadata stats (min/max)")
        elif high or low:
            fields.warn("stats", {"min": low, "max": high}, "expected a min below each max")
    content = tensor.table(3)
    if content is not None and content.scalar(0, "B") == _IMAGE_PROPERTIES:
        space = content.union(1).scalar(0, "b")
        if space in _COLOR_SPACES:
            fields.set("color_space", _COLOR_SPACES[space], "TFLite metadata ImageProperties")


def _normalization_problem(mean: tuple[float, ...], std: tuple[float, ...]) -> str | None:
    if not mean or not std:
        return "mean and std must both be given"
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        return f"{len(mean)} means but {len(std)} stds"
    if any(s == 0 for s in std):
        return "a std of 0 would divide by zero"
    return None


def _broadcast(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    count = max(len(mean), len(std))
    return (mean * count if len(mean) == 1 else mean), (std * count if len(std) == 1 else std)


def _zip_labels(fields: _Fields, member: str) -> tuple[str, ...] | None:
    """One label per line of ``member`` in the zip appended to the model."""
    try:
        with zipfile.ZipFile(fields.path) as archive:
            text = archive.read(member).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, OSError) as exc:
        fields.warn("label file", member, f"the metadata names it but it cannot be read from the packed files ({exc})")
        return None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        fields.warn("label file", member, "it is empty")
        return None
    return tuple(labels)


def _read_tflite_zip(path: Path, fields: _Fields) -> None:
    """An Ultralytics TFLite export's ``metadata.json`` zip member (our own manifest uses the same name: skipped)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "metadata.json" not in archive.namelist():
                return
            raw = archive.read("metadata.json")
    except (zipfile.BadZipFile, OSError):
        return  # no appended zip: nothing to read
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        fields.warn("metadata.json", raw[:80], f"not JSON ({exc})")
        return
    if is_ultralytics_metadata(doc):
        _read_key_values({k: v for k, v in doc.items() if v is not None}, fields, "metadata.json")


def is_ultralytics_metadata(doc: object) -> bool:
    """True for an Ultralytics export's ``metadata.json`` (class ``names``, no ``decoder``): not our manifest.

    Both use the member name ``metadata.json`` in a .tflite's zip; a manifest reader should pass on this one.
    """
    return isinstance(doc, dict) and "names" in doc and "decoder" not in doc


# --- ONNX -----------------------------------------------------------------------------------------

_ONNX_STRINGS = {2: "producer", 6: "doc_string"}


def _read_onnx(data: mmap.mmap, fields: _Fields) -> None:
    """``ModelProto`` top level: producer, doc string, model version and ``metadata_props`` (field 14)."""
    props: dict[str, str] = {}
    try:
        for number, value in message_fields(data, 0, len(data)):
            if number == 14 and isinstance(value, memoryview):
                entry = {
                    n: bytes(v).decode("utf-8", "replace")
                    for n, v in message_fields(value, 0, len(value))
                    if isinstance(v, memoryview)
                }
                if 1 in entry:
                    props[entry[1]] = entry.get(2, "")
            elif number in _ONNX_STRINGS and isinstance(value, memoryview):
                fields.note(_ONNX_STRINGS[number], bytes(value).decode("utf-8", "replace"))
            elif number == 5 and isinstance(value, int) and value:
                fields.note("model_version", value)
    except ValueError as exc:
        fields.warn("ModelProto", None, f"not a readable ONNX protobuf ({exc})")
    _read_key_values(props, fields, "ONNX metadata_props")


# --- Ultralytics-style key/value metadata (ONNX metadata_props, TFLite metadata.json) ---------------

_PLAIN_KEYS = ("description", "author", "version", "license", "date", "docs", "batch", "end2end", "channels", "kpt_shape", "head")


def _literal(value: Any) -> Any:
    """A Python/JSON literal written as text (ONNX props are strings); never ``eval``."""
    return ast.literal_eval(value) if isinstance(value, str) else value


def _read_key_values(props: dict[str, Any], fields: _Fields, origin: str) -> None:
    _read_export_args(props, fields, origin)
    for key in _PLAIN_KEYS:
        if key in props:
            fields.note(key, props[key])
    author, description = str(props.get("author", "")), str(props.get("description", ""))
    if "ultralytics" in (author + description).lower():
        fields.set("family", "ultralytics", f"{origin} 'author'")
    if "names" in props:
        try:
            fields.set("labels", _names(_literal(props["names"])), f"{origin} 'names'")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            fields.warn(f"{origin} 'names'", props["names"], str(exc))
    if "imgsz" in props:
        try:
            fields.set("input_size", _imgsz(_literal(props["imgsz"])), f"{origin} 'imgsz'")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            fields.warn(f"{origin} 'imgsz'", props["imgsz"], str(exc))
    if "stride" in props:
        try:
            stride = int(float(str(props["stride"])))
            if stride < 1:
                raise ValueError("a stride must be a positive integer")
            fields.set("stride", stride, f"{origin} 'stride'")
        except ValueError as exc:
            fields.warn(f"{origin} 'stride'", props["stride"], str(exc))
    task = str(props.get("task", "")).strip()
    if task:
        fields.set("task", task, f"{origin} 'task'")


def _read_export_args(props: dict[str, Any], fields: _Fields, origin: str) -> None:
    """Ultralytics ``args``: an export with ``nms=True`` is end-to-end too; ``dynamic`` says the axes are free."""
    if "args" not in props:
        return
    try:
        args = _literal(props["args"])
        if not isinstance(args, dict):
            raise ValueError("expected a dict of export arguments")
        end2end = _literal(props.get("end2end", "False"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        fields.warn(f"{origin} 'args'", props["args"], str(exc))
        return
    fields.note("end2end", bool(end2end is True or args.get("nms") is True))
    if "dynamic" in args:
        fields.note("dynamic", bool(args["dynamic"]))


def _names(value: Any) -> tuple[str, ...]:
    """``{0: 'person', 1: 'bicycle'}`` (keys may be strings, from JSON) or a list, to names by class id."""
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    if not isinstance(value, dict) or not value:
        raise ValueError("expected a dict of class id -> name or a list of names")
    by_id = {int(k): str(v) for k, v in value.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"class ids must run 0..{len(by_id) - 1} without gaps")
    return tuple(by_id[i] for i in range(len(by_id)))


def _imgsz(value: Any) -> tuple[int, int]:
    """Ultralytics ``imgsz`` is ``[h, w]`` (or one int for a square); ours is ``(width, height)``."""
    if isinstance(value, int | float):
        value = [value, value]
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(isinstance(v, int | float) and v >= 1 for v in value):
        raise ValueError("expected [height, width] of positive integers")
    return int(value[1]), int(value[0])


__all__ = ["ModelMetadata", "is_ultralytics_metadata", "read_model_metadata"]
