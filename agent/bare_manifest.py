"""The manifest of a model, field by field: our manifest > the model's metadata > family convention > guess.

A model that comes with our manifest (``model.json`` or embedded) is described by it entirely;
only a dynamic input's size may come from the config. A bare model is described from what it
says about itself (:mod:`agent.model_metadata`: labels, normalization, input size, task, family),
then from its family's conventions (recognized by metadata or by the output layout), then from
guesses on tensor shapes. Every field remembers where it came from, so ``models inspect`` and
the logs can say "normalization: family convention (Ultralytics: RGB / 255)".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.decoders import detect_decoder
from agent.decoders.base import TensorInfo
from agent.errors import DecoderError, ManifestError
from agent.manifest import (
    ClassifierDecoder,
    ColorOrder,
    InputSpec,
    Layout,
    ModelManifest,
    Normalization,
    ResizeMode,
    Task,
    TensorDType,
    Thresholds,
)
from agent.model_metadata import ModelMetadata

MANIFEST = "manifest"
CONFIG_SIZE = "config model.input_size"
TENSOR = "model tensor"
GUESS = "guess"


@dataclass(frozen=True)
class Family:
    """Conventions a model family follows when its files do not spell them out."""

    name: str
    #: ``(mean, std)`` in pixel units for float inputs; None: the family has no single convention
    normalization: tuple[float, float] | None
    detect_resize: ResizeMode
    classify_resize: ResizeMode
    pad_value: int
    #: default thresholds of the family's own predictor, so a bare model answers as it does
    thresholds: Thresholds | None = None
    #: TFLite exports of the family emit 0..1 boxes
    tflite_boxes_normalized: bool = False
    why: str = ""


FAMILIES = {
    # Ultralytics LetterBox: centred, pad 114, INTER_LINEAR, RGB / 255; classify: short side resize + centre crop
    "ultralytics": Family(
        "ultralytics",
        (0.0, 255.0),
        ResizeMode.letterbox,
        ResizeMode.center_crop,
        114,
        Thresholds(score=0.25, iou=0.7, max_detections=300),
        tflite_boxes_normalized=True,
        why="Ultralytics: RGB / 255, letterbox pad 114 (classify: centre crop), predict conf 0.25 iou 0.7",
    ),
    # classic anchor-based YOLOv5 ([1, N, 5+C] with objectness): Ultralytics preprocessing, detect.py's defaults
    "yolov5": Family(
        "yolov5",
        (0.0, 255.0),
        ResizeMode.letterbox,
        ResizeMode.center_crop,
        114,
        Thresholds(score=0.25, iou=0.45, max_detections=1000),
        why="YOLOv5: RGB / 255, letterbox pad 114, detect.py conf 0.25 iou 0.45 max_det 1000",
    ),
    # MediaPipe ImageToTensorCalculator: keep aspect ratio, BORDER_ZERO, float range [-1, 1]
    "mediapipe": Family(
        "mediapipe",
        (127.5, 127.5),
        ResizeMode.letterbox_warp,
        ResizeMode.stretch,
        0,
        why="MediaPipe SSD-anchor detector: RGB in [-1, 1], letterbox with zero border",
    ),
    # TF Object Detection API SSD (TFLite_Detection_PostProcess) and the Task Library: stretch, [-1, 1]
    "tf-object-detection": Family(
        "tf-object-detection",
        (127.5, 127.5),
        ResizeMode.stretch,
        ResizeMode.stretch,
        0,
        why="TF Object Detection API SSD: RGB in [-1, 1] (uint8 inputs take raw pixels), resized without letterbox",
    ),
    # TFLite Task Library ImageClassifier: the whole image resized to the input (no crop, no letterbox)
    "tflite-classifier": Family(
        "tflite-classifier",
        None,
        ResizeMode.stretch_libyuv,
        ResizeMode.stretch_libyuv,
        0,
        why="TFLite Task Library classifier: whole image resized to the input with libyuv's bilinear filter",
    ),
}

# MediaPipe face detection graphs' TensorsToDetections min_score_thresh, by anchor count (short range 896, full 2304)
_MEDIAPIPE_SCORE = {896: 0.5, 2304: 0.6}

_BY_OUTPUTS = {"ssd_anchors": "mediapipe", "yolov8": "ultralytics", "yolov5": "yolov5", "end2end": "ultralytics"}


@dataclass
class ResolvedManifest:
    """A manifest and, per field, where it came from."""

    manifest: ModelManifest
    origin: str
    sources: dict[str, str] = field(default_factory=dict)


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    """``"640"`` or ``"640x480"`` (width x height) -> (w, h); ValueError names the expected form."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"input size {text!r}: expected WIDTHxHEIGHT (e.g. 640x480) or one number for square") from None
    if len(sizes) not in (1, 2) or any(s < 1 for s in sizes):
        raise ValueError(f"input size {text!r}: expected WIDTHxHEIGHT (e.g. 640x480) or one number for square")
    return (sizes[0], sizes[-1])


def choose_input_size(
    config_size: tuple[int, int] | None, manifest: ModelManifest | None, metadata: ModelMetadata
) -> tuple[tuple[int, int] | None, str | None]:
    """The size to run a dynamic input at, and its source: config > manifest > model metadata."""
    if config_size is not None:
        return config_size, CONFIG_SIZE
    if manifest is not None:
        return (manifest.input.width, manifest.input.height), MANIFEST
    if metadata.input_size is not None:
        return metadata.input_size, _meta_source(metadata, "input_size")
    return None, None


def check_config_size(config_size: tuple[int, int] | None, spec_size: tuple[int, int], tensor: TensorInfo, path: Path) -> None:
    """A ``model.input_size`` that contradicts the model's (static) input is an error, not a silent resize."""
    if config_size is not None and config_size != spec_size:
        raise ManifestError(
            f"{path}: model.input_size {list(config_size)} (width, height) contradicts the model's input {tensor.name!r} "
            f"of shape {list(tensor.shape)}, which is fixed at {list(spec_size)}; remove model.input_size from the config "
            f"or set it to {list(spec_size)}"
        )


def _meta_source(metadata: ModelMetadata, key: str) -> str:
    where = metadata.sources.get(key)
    return f"model metadata ({where})" if where else "model metadata"


def tensor_layout(tensor: TensorInfo) -> tuple[Layout, int, int, int]:
    """Layout, channels, width, height of a 4-D image input."""
    shape = tensor.shape
    if len(shape) != 4:
        raise ManifestError(
            f"input {tensor.name!r} has shape {list(shape)}; without a manifest only 4-D image inputs work "
            "(write a model.json with input.layout, width and height)"
        )
    nchw = shape[1] in (1, 3) and shape[3] not in (1, 3)
    channels = shape[1] if nchw else shape[3]
    height, width = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
    return (Layout.NCHW if nchw else Layout.NHWC), channels, width, height


def from_manifest(
    manifest: ModelManifest, origin: str, tensor: TensorInfo, size_source: str | None, config_size: tuple[int, int] | None
) -> ResolvedManifest:
    """Our manifest describes everything; a config size may move a dynamic input's size."""
    sources = dict.fromkeys(("input", "input.size", "labels", "decoder", "task", "thresholds"), f"{MANIFEST} ({origin})")
    if config_size is not None and size_source == CONFIG_SIZE:
        spec = manifest.input.model_copy(update={"width": config_size[0], "height": config_size[1]})
        manifest = manifest.model_copy(update={"input": spec})
        sources["input.size"] = CONFIG_SIZE
    return ResolvedManifest(manifest, origin, sources)


def _family(metadata: ModelMetadata, decoder_type: str, suffix: str) -> tuple[Family | None, str]:
    if metadata.family and metadata.family in FAMILIES:
        return FAMILIES[metadata.family], _meta_source(metadata, "family")
    if decoder_type in _BY_OUTPUTS:
        return FAMILIES[_BY_OUTPUTS[decoder_type]], f"recognized by its outputs ({decoder_type} layout)"
    if decoder_type == "ssd_postprocess":
        return FAMILIES["tf-object-detection"], "recognized by its outputs (TFLite_Detection_PostProcess)"
    if decoder_type == "classifier" and suffix == ".tflite":
        return FAMILIES["tflite-classifier"], "recognized by its outputs (TFLite classifier)"
    return None, ""


def _decoder(outputs: list[TensorInfo], metadata: ModelMetadata, path: Path) -> tuple[object, str]:
    """The guessed decoder spec; labels from metadata must fit the class count it implies."""
    labels = metadata.labels
    if labels is None:
        return detect_decoder(outputs, None), f"{GUESS} from output shapes"
    try:
        return detect_decoder(outputs, len(labels)), f"{GUESS} from output shapes and {len(labels)} labels"
    except DecoderError:
        detect_decoder(outputs, None)  # no decoder at all: that error (listing the formats) is the one to show
        raise DecoderError(
            f"{path}: the labels in {_meta_source(metadata, 'labels')} list {len(labels)} classes, which the outputs do "
            f"not fit:\n" + "\n".join(f"  output {o.name!r}: shape {list(o.shape)}" for o in outputs) + "\n"
            "Write a model.json beside the model with one label per model class."
        ) from None


def _normalization(
    tensor: TensorInfo, channels: int, metadata: ModelMetadata, family: Family | None, family_src: str
) -> tuple[Normalization, str]:
    """Float inputs: metadata > family > /255 guess. Integer inputs: the quantization defines the range."""
    if tensor.dtype == np.float32:
        if metadata.normalization is not None:
            mean, std = metadata.normalization
            return Normalization(mean=_per_channel(mean, channels), std=_per_channel(std, channels)), _meta_source(
                metadata, "normalization"
            )
        if metadata.input_range is not None and metadata.input_range[1] > metadata.input_range[0]:
            low, high = metadata.input_range  # pixels 0..255 mapped linearly onto the declared value range
            std_r = 255.0 / (high - low)
            return Normalization(mean=(-low * std_r,) * channels, std=(std_r,) * channels), _meta_source(metadata, "input_range")
        if family is not None and family.normalization is not None:
            mean_v, std_v = family.normalization
            return Normalization(mean=(mean_v,) * channels, std=(std_v,) * channels), f"family convention: {family.name}"
        return Normalization(mean=(0.0,) * channels, std=(255.0,) * channels), f"{GUESS} (pixels / 255)"
    if family is not None and family.name in ("ultralytics", "yolov5") and tensor.quantized:
        # Ultralytics' own LiteRT backends (YOLOv5 and YOLOv8 on) feed x / 255 quantized with the input's scale and zero point
        return Normalization(mean=(0.0,) * channels, std=(255.0,) * channels), f"family convention: {family.name}"
    if not tensor.quantized:
        return Normalization(mean=(0.0,) * channels, std=(1.0,) * channels), "integer input without quantization: raw pixels"
    # LiteRT / TFLite Support feed a quantized input raw pixels: its scale and zero point define the float range
    shift = 0 if tensor.dtype == np.uint8 else 128
    raw_mean, raw_std = float(tensor.zero_point + shift), 1.0 / tensor.scale
    return (
        Normalization(mean=(raw_mean,) * channels, std=(raw_std,) * channels),
        f"input quantization (scale {tensor.scale:.6g}, zero point {tensor.zero_point}): raw pixels",
    )


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    return tuple(values) * channels if len(values) == 1 else tuple(values)


def describe_bare(
    tensor: TensorInfo,
    outputs: list[TensorInfo],
    path: Path,
    metadata: ModelMetadata,
    size_source: str | None,
) -> ResolvedManifest:
    """A manifest for a model without ours: model metadata > family convention > guess, per field."""
    sources: dict[str, str] = {}
    layout, channels, width, height = tensor_layout(tensor)
    sources["input.layout"] = sources["input.dtype"] = TENSOR
    sources["input.size"] = size_source if size_source and size_source != MANIFEST else TENSOR
    try:
        dtype = TensorDType(str(tensor.dtype))
    except ValueError:
        raise ManifestError(f"{path}: input {tensor.name!r} has dtype {tensor.dtype}; supported: float32, uint8, int8") from None
    spec, decoder_src = _decoder(outputs, metadata, path)
    decoder_type = str(getattr(spec, "type", ""))
    sources["decoder"] = decoder_src
    family, family_src = _family(metadata, decoder_type, path.suffix.lower())
    if family is not None:
        sources["family"] = f"{family.name} ({family_src})"
    task = Task.classify if isinstance(spec, ClassifierDecoder) else Task.detect
    sources["task"] = _meta_source(metadata, "task") if metadata.task == task.value else f"{GUESS} from the decoder"
    normalization, sources["input.normalization"] = _normalization(tensor, channels, metadata, family, family_src)
    conv = f"family convention: {family.name}" if family else GUESS
    if family is not None:
        resize = family.classify_resize if task is Task.classify else family.detect_resize
        pad = family.pad_value
    else:
        resize, pad = (ResizeMode.stretch if task is Task.classify else ResizeMode.letterbox), 114
    sources["input.resize"] = sources["input.pad_value"] = conv
    sources["input.color"] = TENSOR if channels == 1 else (conv if family else f"{GUESS} (RGB)")
    if metadata.color_space == "RGB" and channels == 3:
        sources["input.color"] = _meta_source(metadata, "color_space")
    # only a file that names its family (Ultralytics writes metadata into every export) earns this convention
    named = family is not None and metadata.family == family.name
    if (
        named
        and family is not None
        and family.tflite_boxes_normalized
        and path.suffix.lower() == ".tflite"
        and hasattr(spec, "boxes_normalized")
    ):
        spec = spec.model_copy(update={"boxes_normalized": True})  # type: ignore[attr-defined]
        sources["decoder"] += f"; boxes 0..1 (family convention: {family.name} TFLite export)"
    if named and metadata.extra.get("head") == "RTDETRDecoder" and decoder_type == "end2end":
        # Ultralytics RT-DETR: top-300 queries as cx, cy, w, h in 0..1, the frame stretched to the input (no letterbox)
        spec = spec.model_copy(update={"boxes_normalized": True, "box_format": "cxcywh"})  # type: ignore[attr-defined]
        sources["decoder"] += "; cx, cy, w, h in 0..1 (model metadata: head RTDETRDecoder)"
        resize = ResizeMode.stretch
        sources["input.resize"] = "family convention: ultralytics RT-DETR (frame stretched to the input)"
    num_classes = _class_count(spec, outputs)
    if metadata.labels is not None:
        labels, sources["labels"] = tuple(metadata.labels), _meta_source(metadata, "labels")
    else:
        labels, sources["labels"] = tuple(f"class{i}" for i in range(num_classes)), f"{GUESS} (class0..class{num_classes - 1})"
    thresholds = family.thresholds if family is not None and family.thresholds is not None else Thresholds()
    sources["thresholds"] = conv if family is not None and family.thresholds is not None else "defaults"
    if task is Task.classify:
        # Ultralytics' probs.top5 and the Task Library's classifier (score_threshold 0) report the top classes unfiltered
        thresholds = Thresholds(score=0.0)
        sources["thresholds"] = f"{conv} (a classifier reports its top-5 whatever the scores)"
    elif family is not None and family.name == "mediapipe":
        anchors = outputs[0].shape[1] if len(outputs[0].shape) == 3 else 0
        score = _MEDIAPIPE_SCORE.get(anchors, 0.5)
        thresholds = Thresholds(score=score, iou=0.3)
        sources["thresholds"] = f"{conv} (its face detection graph: min score {score}, suppression IoU 0.3)"
    manifest = ModelManifest(
        name=path.stem,
        version="0",
        task=task,
        input=InputSpec(
            width=width,
            height=height,
            layout=layout,
            dtype=dtype,
            color=ColorOrder.GRAY if channels == 1 else ColorOrder.RGB,
            normalization=normalization,
            resize=resize,
            pad_value=pad,
        ),
        labels=labels,
        decoder=spec,  # type: ignore[arg-type]  # detect_decoder returns a DecoderSpec member
        thresholds=thresholds,
    )
    return ResolvedManifest(manifest, "read from the model (no manifest)", sources)


def _class_count(decoder: object, outputs: list[TensorInfo]) -> int:
    kind = getattr(decoder, "type", "")
    if kind == "yolov8":
        return max(1, min(outputs[0].shape[1:]) - 4)
    if kind == "yolov5":
        return max(1, outputs[0].shape[-1] - 5)
    if kind == "classifier":
        return int(np.prod(outputs[0].shape))
    if kind == "ssd_anchors":
        return max(1, min(o.shape[-1] for o in outputs))
    return 91  # SSD post-process and end-to-end: class ids index the labels; COCO-sized by default
