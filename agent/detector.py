"""A loaded model: manifest + backend + preprocessor + decoder, checked against each other.

``load_detector`` refuses, with a message naming the file and the mismatch, a model whose
manifest does not describe it (input shape or dtype, label count vs outputs, sha256), a
corrupt or truncated file, and outputs no decoder understands.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from agent.backends import Backend, BackendOptions, open_backend
from agent.backends.onnxruntime import OnnxRuntimeBackend
from agent.decoders import build_decoder, detect_decoder
from agent.decoders.base import DecodedOutput, Decoder, TensorInfo
from agent.errors import DecoderError, ManifestError, ModelFileError
from agent.manifest import (
    ColorOrder,
    InputSpec,
    Layout,
    ModelManifest,
    Normalization,
    ResizeMode,
    Task,
    TensorDType,
    Thresholds,
    find_manifest,
    sha256_file,
)
from agent.preprocess import Letterbox, Preprocessor
from agent.schema import Box, Detection, ModelRef
from agent.sources.base import PixelFormat

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".tflite", ".onnx")


def resolve_model_file(path: Path) -> Path:
    """A model file, or the single model file inside a directory."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in MODEL_SUFFIXES)
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise ModelFileError(f"{path} must contain exactly one model file (.tflite or .onnx); found {names}")
        return found[0]
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist (check model.path in the config)")
    return path


def infer_input_spec(tensor: TensorInfo) -> InputSpec:
    """Best guess of the input contract of a model that has no manifest."""
    shape = tensor.shape
    if len(shape) != 4:
        raise ManifestError(f"input {tensor.name!r} has shape {list(shape)}; without a manifest only 4-D image inputs work")
    nchw = shape[1] in (1, 3) and shape[3] not in (1, 3)
    channels = shape[1] if nchw else shape[3]
    height, width = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
    try:
        dtype = TensorDType(str(tensor.dtype))
    except ValueError:
        raise ManifestError(f"input {tensor.name!r} has dtype {tensor.dtype}; supported: float32, uint8, int8") from None
    return InputSpec(
        width=width,
        height=height,
        layout=Layout.NCHW if nchw else Layout.NHWC,
        dtype=dtype,
        color=ColorOrder.GRAY if channels == 1 else ColorOrder.RGB,
        normalization=Normalization(mean=(0.0,) * channels, std=(255.0,) * channels),
        resize=ResizeMode.letterbox,
    )


def manifest_from_model(backend: Backend, path: Path) -> ModelManifest:
    """Describe a bare model from its tensors: input layout and the decoder from output names/shapes."""
    spec = infer_input_spec(backend.input)
    decoder = detect_decoder(backend.outputs, None)
    num_classes = _guess_class_count(decoder, backend.outputs)
    return ModelManifest(
        name=path.stem,
        version="0",
        task=Task.classify if decoder.type == "classifier" else Task.detect,
        input=spec,
        labels=tuple(f"class{i}" for i in range(num_classes)),
        decoder=decoder,
    )


def _guess_class_count(decoder: object, outputs: list[TensorInfo]) -> int:
    kind = getattr(decoder, "type", "")
    if kind == "yolov8":
        rows = min(outputs[0].shape[1:])
        return max(1, rows - 4)
    if kind == "yolov5":
        return max(1, outputs[0].shape[-1] - 5)
    if kind == "classifier":
        return outputs[0].shape[-1]
    if kind == "ssd_anchors":
        return max(1, min(o.shape[-1] for o in outputs))
    return 91  # SSD post-process and end-to-end: class ids index the labels; COCO-sized by default


class Detector:
    """Runs one model on frames. Not thread-safe: one pipeline thread drives it."""

    def __init__(self, path: Path, manifest: ModelManifest, manifest_origin: str, backend: Backend, sha256: str) -> None:
        self.path = path
        self.manifest = manifest
        self.manifest_origin = manifest_origin
        self.backend = backend
        self.sha256 = sha256
        self.ref = ModelRef(name=manifest.name, version=manifest.version, sha256=sha256)
        self.labels = manifest.labels
        self._contexts: list[Backend] = [backend]
        self.preprocessor = Preprocessor(manifest.input, backend.input)
        try:
            self.decoder: Decoder = build_decoder(
                manifest.decoder,
                backend.outputs,
                (manifest.input.width, manifest.input.height),
                len(manifest.labels),
                manifest.thresholds,
            )
        except DecoderError as exc:
            raise DecoderError(f"{path} ({manifest_origin}): {exc}") from None

    @property
    def task(self) -> Task:
        return self.manifest.task

    def contexts(self, count: int) -> list[Backend]:
        """``count`` execution contexts (the first is ``backend``), forked on first use."""
        while len(self._contexts) < count:
            self._contexts.append(self.backend.fork())
        return self._contexts[:count]

    def preprocess(self, image: np.ndarray, fmt: PixelFormat, width: int, height: int, ctx: Backend | None = None) -> Letterbox:
        """Write a frame into the input memory of ``ctx`` (default: the primary context)."""
        return self.preprocessor.write(image, fmt, width, height, (ctx or self.backend).input_array())

    def invoke(self, ctx: Backend | None = None) -> None:
        (ctx or self.backend).invoke()

    def decode_raw(self, ctx: Backend | None = None) -> DecodedOutput:
        return self.decoder.decode((ctx or self.backend).output_arrays())

    def decode(self, geo: Letterbox, ctx: Backend | None = None) -> list[Detection]:
        return self.to_detections(self.decode_raw(ctx), geo)

    def to_detections(self, raw: DecodedOutput, geo: Letterbox) -> list[Detection]:
        labels = self.labels
        scores = raw.scores.tolist()
        class_ids = raw.class_ids.tolist()
        if raw.boxes is None:
            return [
                Detection.model_construct(class_id=c, label=_label(labels, c), score=s)
                for c, s in zip(class_ids, scores, strict=True)
            ]
        pixels = geo.input_norm_to_frame(raw.boxes)
        norm = pixels / np.array([geo.frame_w, geo.frame_h, geo.frame_w, geo.frame_h], np.float32)
        out = []
        for c, s, p, n in zip(class_ids, scores, pixels.tolist(), norm.tolist(), strict=True):
            out.append(
                Detection.model_construct(
                    class_id=c,
                    label=_label(labels, c),
                    score=s,
                    box=Box.model_construct(x1=p[0], y1=p[1], x2=p[2], y2=p[3]),
                    box_normalized=Box.model_construct(x1=n[0], y1=n[1], x2=n[2], y2=n[3]),
                )
            )
        return out

    def detect(self, image: np.ndarray, fmt: PixelFormat = PixelFormat.BGR) -> list[Detection]:
        """One-shot inference on an image (not the hot path)."""
        height, width = image.shape[:2]
        if fmt is PixelFormat.YUV420:
            height = height * 2 // 3
        geo = self.preprocess(image, fmt, width, height)
        self.invoke()
        return self.decode(geo)

    def set_thresholds(self, thresholds: Thresholds) -> None:
        self.decoder.set_thresholds(thresholds)

    def close(self) -> None:
        for ctx in self._contexts:
            ctx.close()
        self._contexts = [self.backend]


def _label(labels: tuple[str, ...], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else f"class{class_id}"


def load_detector(
    path: Path,
    options: BackendOptions | None = None,
    backend: str | None = None,
    thresholds: Thresholds | None = None,
    verify_sha256: bool = True,
) -> Detector:
    """Load a model file (or a directory holding one) with its manifest, and check they agree."""
    model_file = resolve_model_file(path)
    manifest, origin = find_manifest(model_file)
    digest = sha256_file(model_file)
    if manifest is not None and manifest.sha256 and verify_sha256 and manifest.sha256 != digest:
        raise ManifestError(
            f"{model_file} has sha256 {digest[:16]}…, but {origin} says {manifest.sha256[:16]}…: the file was replaced, "
            "truncated or corrupted. Restore the file or regenerate the manifest."
        )
    input_shape = manifest.input.tensor_shape() if manifest is not None else None
    if (backend or "") == "onnxruntime" or (backend is None and model_file.suffix.lower() in (".onnx", ".ort")):
        runtime: Backend = OnnxRuntimeBackend(model_file, options or BackendOptions(), input_shape=input_shape)
    else:
        runtime = open_backend(model_file, options, backend)
    if manifest is None:
        manifest = manifest_from_model(runtime, model_file)
        origin = "inferred from tensors"
        log.warning(
            "%s has no manifest; inferred %s decoder and %s input", model_file, manifest.decoder.type, manifest.input.layout
        )
    if thresholds is not None:
        manifest = manifest.model_copy(update={"thresholds": thresholds})
    assert origin is not None
    try:
        return Detector(model_file, manifest, origin, runtime, digest)
    except Exception:
        runtime.close()
        raise
