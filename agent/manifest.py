"""The model manifest: what a model expects as input and how to read its outputs.

One pydantic model, shared by the agent (which reads it) and the converters (which write it).
It lives as ``model.json`` (or ``<model stem>.json``) beside the model file, or embedded in
the model itself (a ``metadata.json`` zip member appended to a .tflite; ``metadata_props``
key ``edge_agent_manifest`` in an ONNX file).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.errors import BackendUnavailableError, ManifestError, ModelFileError

MANIFEST_SCHEMA_VERSION = 1
EMBEDDED_TFLITE_MEMBER = "metadata.json"
EMBEDDED_ONNX_KEY = "edge_agent_manifest"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(StrEnum):
    detect = "detect"
    classify = "classify"


class Layout(StrEnum):
    NHWC = "NHWC"
    NCHW = "NCHW"


class ColorOrder(StrEnum):
    RGB = "RGB"
    BGR = "BGR"
    GRAY = "GRAY"


class ResizeMode(StrEnum):
    letterbox = "letterbox"  # whole frame, aspect kept, padded (Ultralytics LetterBox, centred)
    stretch = "stretch"  # whole frame resized to the input, aspect not kept (TFLite Task Library)
    center_crop = "center_crop"  # short side scaled to the input, the centre cropped (Ultralytics classify)
    letterbox_warp = "letterbox_warp"  # letterbox by one affine warp, float padding (MediaPipe ImageToTensorCalculator)
    stretch_libyuv = "stretch_libyuv"  # stretch with libyuv's bilinear arithmetic (TFLite Task Library)


class TensorDType(StrEnum):
    float32 = "float32"
    uint8 = "uint8"
    int8 = "int8"


class Normalization(_Strict):
    """``x = (pixel - mean) / std`` per channel, with pixels in 0..255 (input colour order)."""

    mean: tuple[float, ...] = Field((0.0, 0.0, 0.0), description="Per-channel mean in 0..255 pixel units.")
    std: tuple[float, ...] = Field((255.0, 255.0, 255.0), description="Per-channel std in 0..255 pixel units.")

    @field_validator("std")
    @classmethod
    def _nonzero(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(s == 0 for s in v):
            raise ValueError("std must not contain 0")
        return v


class InputSpec(_Strict):
    width: int = Field(gt=0, description="Model input width in pixels.")
    height: int = Field(gt=0, description="Model input height in pixels.")
    layout: Layout = Field(Layout.NHWC, description="Tensor layout of the model input.")
    dtype: TensorDType = Field(TensorDType.float32, description="Element type of the input tensor.")
    color: ColorOrder = Field(ColorOrder.RGB, description="Channel order the model was trained on.")
    normalization: Normalization = Field(
        default_factory=Normalization,
        description="Applied before quantization; ignored for uint8/int8 inputs whose scale/zero-point say otherwise.",
    )
    resize: ResizeMode = Field(ResizeMode.letterbox, description="How a frame is fitted to the input.")
    pad_value: int = Field(114, ge=0, le=255, description="Pixel value of letterbox padding.")

    @property
    def channels(self) -> int:
        return 1 if self.color is ColorOrder.GRAY else 3

    def tensor_shape(self) -> tuple[int, int, int, int]:
        if self.layout is Layout.NHWC:
            return (1, self.height, self.width, self.channels)
        return (1, self.channels, self.height, self.width)


# ---- decoders -------------------------------------------------------------------------


class SSDPostprocessDecoder(_Strict):
    """TFLite ``TFLite_Detection_PostProcess`` outputs: boxes, classes, scores, count (any order)."""

    type: Literal["ssd_postprocess"] = "ssd_postprocess"
    label_offset: int = Field(0, description="Added to the class index before the label lookup.")


class YoloV5Decoder(_Strict):
    """``[1, N, 5+C]`` rows of cx, cy, w, h, objectness, class scores."""

    type: Literal["yolov5"] = "yolov5"
    boxes_normalized: bool = Field(False, description="Boxes in 0..1 of the input instead of input pixels.")


class YoloV8Decoder(_Strict):
    """``[1, 4+C, N]`` (or transposed ``[1, N, 4+C]``) of cx, cy, w, h, class scores."""

    type: Literal["yolov8"] = "yolov8"
    boxes_normalized: bool = Field(False, description="Boxes in 0..1 of the input instead of input pixels.")


class End2EndDecoder(_Strict):
    """NMS inside the graph: ``[1, N, 6]`` rows of x1, y1, x2, y2 (or cx, cy, w, h), score, class."""

    type: Literal["end2end"] = "end2end"
    boxes_normalized: bool = Field(False, description="Boxes in 0..1 of the input instead of input pixels.")
    box_format: Literal["xyxy", "cxcywh"] = Field(
        "xyxy", description="Corners (YOLOv10/YOLO26, nms=True exports) or centre and size (RT-DETR)."
    )


class ClassifierDecoder(_Strict):
    """``[1, C]`` class scores."""

    type: Literal["classifier"] = "classifier"
    apply_softmax: bool = Field(False, description="Outputs are logits: apply softmax first.")
    top_k: int = Field(5, gt=0, description="Number of classes reported per frame.")


class AnchorsDecoder(_Strict):
    """MediaPipe-style SSD: raw box regressors ``[1, A, 4+]`` and scores ``[1, A, C]`` + generated anchors."""

    type: Literal["ssd_anchors"] = "ssd_anchors"
    num_layers: int = Field(4, gt=0)
    strides: tuple[int, ...] = (8, 16, 32, 32)
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    fixed_anchor_size: bool = True
    reduce_boxes_in_lowest_layer: bool = False
    x_scale: float = Field(128.0, description="Divisor of the x-centre regressor (input pixels when anchors are fixed).")
    y_scale: float = 128.0
    w_scale: float = 128.0
    h_scale: float = 128.0
    box_order: Literal["yxhw", "xywh"] = Field("xywh", description="Order of the first four regressor values.")
    score_activation: Literal["sigmoid", "none"] = "sigmoid"

    @model_validator(mode="after")
    def _strides_match_layers(self) -> AnchorsDecoder:
        if len(self.strides) != self.num_layers:
            raise ValueError(f"strides has {len(self.strides)} entries but num_layers is {self.num_layers}")
        return self


DecoderSpec = Annotated[
    SSDPostprocessDecoder | YoloV5Decoder | YoloV8Decoder | End2EndDecoder | ClassifierDecoder | AnchorsDecoder,
    Field(discriminator="type"),
]


class Thresholds(_Strict):
    score: float = Field(0.5, ge=0.0, le=1.0, description="Minimum score a detection must reach.")
    iou: float = Field(0.45, ge=0.0, le=1.0, description="IoU above which NMS suppresses the lower score.")
    max_detections: int = Field(100, gt=0, description="At most this many detections per frame.")


class ModelManifest(_Strict):
    """Everything the agent needs to run a model file correctly."""

    schema_version: int = Field(MANIFEST_SCHEMA_VERSION, description="Manifest format version.")
    name: str = Field(min_length=1, description="Model name, stable across versions.")
    version: str = Field(min_length=1, description="Model version (increasing per name).")
    task: Task = Task.detect
    file: str | None = Field(None, description="Model file name, relative to the manifest.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the model file.")
    input: InputSpec
    labels: tuple[str, ...] = Field(min_length=1, description="Class names, indexed by class id.")
    decoder: DecoderSpec
    thresholds: Thresholds = Field(default_factory=Thresholds)
    quantization: dict[str, object] | None = Field(None, description="Converter's quantization parameters.")
    provenance: dict[str, object] | None = Field(None, description="Source model hash, tool versions, dates.")

    @model_validator(mode="after")
    def _task_matches_decoder(self) -> ModelManifest:
        is_classifier = isinstance(self.decoder, ClassifierDecoder)
        if is_classifier != (self.task is Task.classify):
            raise ValueError(f"task {self.task.value!r} does not fit decoder {self.decoder.type!r}")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_manifest(text: str | bytes, origin: str) -> ModelManifest:
    """Validate manifest JSON; ``origin`` names where it came from in the error message."""
    try:
        return ModelManifest.model_validate_json(text)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']} (got {err.get('input')!r:.80})"
            for err in exc.errors(include_url=False)
        ]
        raise ManifestError(
            f"manifest {origin} is invalid:\n" + "\n".join(lines) + "\nFix the manifest or regenerate it with convert-to-tflite."
        ) from None


def sidecar_candidates(model_path: Path) -> list[Path]:
    """Where a manifest for ``model_path`` may live, most specific first."""
    return [
        model_path.with_suffix(model_path.suffix + ".json"),
        model_path.with_suffix(".json"),
        model_path.parent / "model.json",
    ]


def read_embedded_manifest(model_path: Path) -> ModelManifest | None:
    """Manifest embedded in the model file itself, or None."""
    suffix = model_path.suffix.lower()
    if suffix == ".tflite":
        # A .tflite with an appended zip: the zip directory sits at the end of the file.
        try:
            with zipfile.ZipFile(model_path) as zf:
                if EMBEDDED_TFLITE_MEMBER not in zf.namelist():
                    return None
                text = zf.read(EMBEDDED_TFLITE_MEMBER)
        except zipfile.BadZipFile:
            return None
        if _is_foreign_metadata(text):
            return None  # Ultralytics exports use the same member name for their own metadata (agent.model_metadata reads it)
        return parse_manifest(text, f"embedded in {model_path}")
    if suffix == ".onnx":
        try:
            import onnx  # only present on workstations; the agent reads metadata via onnxruntime
        except ImportError:
            onnx = None  # type: ignore[assignment]
        if onnx is None:
            return _read_onnx_metadata_via_ort(model_path)
        try:
            model = onnx.load(str(model_path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
            raise ModelFileError(f"{model_path} is not a valid ONNX model (truncated or corrupt?): {exc}") from None
        for prop in model.metadata_props:
            if prop.key == EMBEDDED_ONNX_KEY:
                return parse_manifest(prop.value, f"embedded in {model_path}")
    return None


def _is_foreign_metadata(text: bytes) -> bool:
    from agent.model_metadata import is_ultralytics_metadata

    try:
        doc = json.loads(text)
    except ValueError:
        return False  # not JSON at all: parse_manifest reports it as a broken manifest
    return is_ultralytics_metadata(doc)


def _read_onnx_metadata_via_ort(model_path: Path) -> ModelManifest | None:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError(
            f"{model_path} is an ONNX model and ONNX Runtime is not installed: pip install 'edge-agent[onnx]'"
        ) from None

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind exception types
        raise ModelFileError(f"{model_path} cannot be loaded by ONNX Runtime (truncated or corrupt?): {exc}") from None
    text = sess.get_modelmeta().custom_metadata_map.get(EMBEDDED_ONNX_KEY)
    return parse_manifest(text, f"embedded in {model_path}") if text else None


def find_manifest(model_path: Path) -> tuple[ModelManifest | None, str | None]:
    """The manifest for a model: a sidecar JSON first, then one embedded in the model.

    Returns ``(manifest, origin)`` or ``(None, None)`` when the model carries none.
    A sidecar that names a different ``file`` is skipped (a shared ``model.json`` may
    describe a sibling).
    """
    for candidate in sidecar_candidates(model_path):
        if candidate.is_file():
            manifest = parse_manifest(candidate.read_bytes(), str(candidate))
            if manifest.file is None or manifest.file == model_path.name:
                return manifest, str(candidate)
    embedded = read_embedded_manifest(model_path)
    if embedded is not None:
        return embedded, f"embedded in {model_path.name}"
    return None, None


def load_manifest_file(path: Path) -> ModelManifest:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest {path} is not valid JSON: {exc}") from None
    return parse_manifest(text, str(path))
