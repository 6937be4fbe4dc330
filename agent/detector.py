"""A loaded model: manifest + backend + preprocessor + decoder, checked against each other.

``load_detector`` is the one loader every path uses (``detect``, ``run``, HTTP, OTA). It refuses,
with a message naming the file and the mismatch, a model whose manifest does not describe it
(input shape or dtype, label count vs outputs, sha256), a corrupt or truncated file, and outputs
no decoder understands. A model without our manifest is described field by field from what it
says about itself (:mod:`agent.bare_manifest`), each field with its source.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from agent.backends import Backend, BackendOptions, open_backend
from agent.bare_manifest import (
    ResolvedManifest,
    check_config_size,
    choose_input_size,
    describe_bare,
    from_manifest,
    tensor_layout,
)
from agent.decoders import build_decoder
from agent.decoders.base import DecodedOutput, Decoder
from agent.errors import DecoderError, ManifestError, ModelFileError
from agent.manifest import ModelManifest, Task, Thresholds, find_manifest, sha256_file
from agent.model_metadata import ModelMetadata, read_model_metadata
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


class Detector:
    """Runs one model on frames. Not thread-safe: one pipeline thread drives it."""

    def __init__(
        self,
        path: Path,
        manifest: ModelManifest,
        manifest_origin: str,
        backend: Backend,
        sha256: str,
        sources: dict[str, str] | None = None,
        metadata: ModelMetadata | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.manifest_origin = manifest_origin
        #: manifest field -> where it came from (manifest, model metadata, family convention, guess)
        self.sources = sources or {}
        self.metadata = metadata or ModelMetadata()
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


def resolve_manifest(
    model_file: Path,
    runtime: Backend,
    manifest: ModelManifest | None,
    origin: str | None,
    metadata: ModelMetadata,
    size_source: str | None,
    config_size: tuple[int, int] | None,
) -> ResolvedManifest:
    """Our manifest if there is one, else one described from the model; a config size must fit the model."""
    if manifest is not None:
        assert origin is not None
        resolved = from_manifest(manifest, origin, runtime.input, size_source, config_size)
    else:
        resolved = describe_bare(runtime.input, runtime.outputs, model_file, metadata, size_source)
    if config_size is not None and len(runtime.input.shape) == 4:
        _, _, width, height = tensor_layout(runtime.input)
        check_config_size(config_size, (width, height), runtime.input, model_file)
    return resolved


def load_detector(
    path: Path,
    options: BackendOptions | None = None,
    backend: str | None = None,
    thresholds: Thresholds | None = None,
    verify_sha256: bool = True,
    input_size: tuple[int, int] | None = None,
) -> Detector:
    """Load a model file (or a directory holding one) with its manifest, and check they agree.

    ``input_size`` (width, height; config ``model.input_size``) fixes dynamic spatial axes; without
    it the manifest's size, then the model metadata's, is used.
    """
    model_file = resolve_model_file(path)
    manifest, origin = find_manifest(model_file)
    digest = sha256_file(model_file)
    if manifest is not None and manifest.sha256 and verify_sha256 and manifest.sha256 != digest:
        raise ManifestError(
            f"{model_file} has sha256 {digest[:16]}…, but {origin} says {manifest.sha256[:16]}…: the file was replaced, "
            "truncated or corrupted. Restore the file or regenerate the manifest."
        )
    metadata = read_model_metadata(model_file)
    size, size_source = choose_input_size(input_size, manifest, metadata)
    opts = (options or BackendOptions()).model_copy(update={"input_size": size})
    runtime = open_backend(model_file, opts, backend)
    try:
        resolved = resolve_manifest(model_file, runtime, manifest, origin, metadata, size_source, input_size)
        if manifest is None:
            log.warning(
                "%s has no manifest; described from the model: %s",
                model_file,
                ", ".join(f"{k}: {v}" for k, v in resolved.sources.items()),
            )
        final = resolved.manifest
        if thresholds is not None:
            final = final.model_copy(update={"thresholds": thresholds})
        return Detector(model_file, final, resolved.origin, runtime, digest, resolved.sources, metadata)
    except Exception:
        runtime.close()
        raise
