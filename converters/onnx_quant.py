"""``quantize-onnx``: static int8 (QDQ or QOperator) with ONNX Runtime's quantization tools, detection head kept float."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent import ModelManifest
from agent.decoders.base import TensorInfo
from agent.manifest import DecoderSpec, InputSpec, Layout, Normalization, Task, TensorDType, Thresholds, find_manifest
from agent.model_metadata import ModelMetadata
from converters import head_guard, manifest_io, onnx_speed
from converters.calibration import load_calibration
from converters.errors import ModelLoadError, OptionError
from converters.kinds import InputKind
from converters.progress import progress_bar, quiet
from converters.source import SourceModel, load_source
from converters.toolchain import require, tool_versions

MAX_IR_VERSION = 9  # the agent allows onnxruntime >= 1.17, which loads at most IR 9
_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}


@dataclass(slots=True)
class OnnxQuantOptions:
    model: Path
    out: Path
    calibration: Path
    calibration_limit: int = 300
    method: str = "minmax"
    per_channel: bool = True
    quantize_head: bool = False
    labels: tuple[str, ...] | None = None
    name: str | None = None
    version: str = "1.0.0"
    mean: tuple[float, ...] | None = None  # None: the source's metadata, else 0
    std: tuple[float, ...] | None = None  # None: the source's metadata, else 255
    decoder: DecoderSpec | None = None
    input_size: tuple[int, int] | None = None  # (w, h): needed for dynamic-axis models without imgsz metadata
    format: str = "qdq"
    activations: str | None = None  # "int8" | "uint8"; None: int8 for QDQ (S8S8), uint8 for QOperator (U8S8)
    speed_check: bool = True


@dataclass(slots=True)
class OnnxQuantResult:
    model_path: Path
    manifest: ModelManifest
    source: SourceModel
    seconds: float
    speed: onnx_speed.SpeedCheck | None = None


class _Reader:
    """onnxruntime CalibrationDataReader over preprocessed images; advances a progress bar as ORT pulls them."""

    def __init__(self, name: str, images: np.ndarray, advance: Callable[[], None] = lambda: None) -> None:
        self._name, self._images, self._i, self._advance = name, images, 0, advance

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._images):
            return None
        self._i += 1
        self._advance()
        return {self._name: self._images[self._i - 1][None]}

    def rewind(self) -> None:
        self._i = 0


def quantize_onnx(opts: OnnxQuantOptions) -> OnnxQuantResult:
    """Quantize ``opts.model`` into ``opts.out/model.onnx`` + ``model.json``; nothing is written there on failure."""
    t0 = time.perf_counter()
    onnx = require("onnx", "convert-onnx", why="quantize-onnx")
    require("onnxruntime", "convert-onnx", why="quantize-onnx uses ONNX Runtime's quantizer")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    if opts.format not in _FORMATS:
        raise OptionError(f"--format {opts.format!r}: choose {' or '.join(_FORMATS)}")
    if opts.activations not in (None, "int8", "uint8"):
        raise OptionError(f"--activations {opts.activations!r}: choose int8 or uint8")
    meta = manifest_io.source_metadata(opts.model)
    manifest_io.check_task(meta, "quantize-onnx")
    dynamic = manifest_io.onnx_input_is_dynamic(opts.model)
    size = opts.input_size or (meta.input_size if dynamic else None)
    source = load_source(str(opts.model), InputKind.onnx, size, None)
    layout = source.layout
    h, w = source.input_shape[2:4] if layout is Layout.NCHW else source.input_shape[1:3]
    mean, std = _normalization(opts, meta)
    spec = InputSpec(width=w, height=h, layout=layout, dtype=TensorDType.float32, normalization=Normalization(mean=mean, std=std))
    images = load_calibration(opts.calibration, spec, opts.calibration_limit)
    existing, _ = find_manifest(opts.model)
    outputs = [(TensorInfo(f"output{i}", o.shape, np.dtype(np.float32)), o) for i, o in enumerate(source.forward(images[:1]))]
    labels, labels_from = _labels(opts, existing, meta)
    decoder = opts.decoder or (existing.decoder if existing else None)
    if labels is None or decoder is None:
        from converters.convert import _default_labels, _guess_decoder

        labels = labels or _default_labels(outputs)
        decoder = decoder or _guess_decoder(Path(), outputs, len(labels))
    manifest_io.check_labels(decoder, outputs, labels, labels_from, (w, h), str(opts.model))
    guard = head_guard.inspect(decoder, outputs)
    activations = opts.activations or ("uint8" if opts.format == "qoperator" else "int8")  # ORT: S8S8 QOperator is slow on x86
    work = Path(tempfile.mkdtemp(prefix="quantize-onnx-"))
    try:
        static, prep, path = work / "float.onnx", work / "prep.onnx", work / "model.onnx"
        _write_static(onnx, opts.model, source.input_shape, static)
        try:
            with quiet():
                quant_pre_process(str(static), str(prep), skip_symbolic_shape=True)
            proto = onnx.load(str(prep))
        except Exception as exc:  # noqa: BLE001 - shape inference raises many types
            raise ModelLoadError(f"ONNX pre-processing (shape inference) failed for {opts.model}: {exc}") from None
        excluded = [] if opts.quantize_head else head_nodes(proto)
        with progress_bar(sys.stdout) as bar, quiet():  # the bar keeps the real stdout; ORT's chatter is hidden
            task = bar.add_task(f"calibrating ({opts.method}) and quantizing", total=len(images))
            quantize_static(
                str(prep),
                str(path),
                _Reader(proto.graph.input[0].name, images, lambda: bar.advance(task)),
                quant_format=getattr(QuantFormat, _FORMATS[opts.format]),
                per_channel=opts.per_channel,
                activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=getattr(CalibrationMethod, _METHODS[opts.method]),
            )
        _cap_ir_version(path)
        speed = None
        if opts.speed_check:
            speed = onnx_speed.compare(
                static,
                path,
                images[0],
                per_channel=opts.per_channel,
                fmt=opts.format,
                method=opts.method,
                activations=activations,
            )
        qparams: dict[str, object] = {
            "mode": "int8",
            "method": "onnxruntime quantize_static",
            "format": _FORMATS[opts.format],
            "calibration": opts.method,
            "weights": f"int8 symmetric {'per-channel' if opts.per_channel else 'per-tensor'}",
            "activations": f"{activations} per-tensor",
            "calibration_images": len(images),
            "input_type": "float32",
            "float_nodes": excluded,
            "head_guard": guard.as_dict(not opts.quantize_head),
        }
        if speed is not None:
            qparams["latency"] = speed.as_dict()
        extra: dict[str, object] = {"source_metadata": dict(meta.sources)} if meta.sources else {}
        manifest = ModelManifest(
            name=opts.name or (existing.name if existing else opts.model.stem),
            version=opts.version,
            task=_task(decoder),
            input=spec,
            labels=labels,
            decoder=decoder,
            thresholds=existing.thresholds if existing else Thresholds(),
            quantization=qparams,
            provenance=manifest_io.provenance(str(opts.model), "onnx", "onnxruntime.quantization", tool_versions(), extra),
        )
        final_path, final = manifest_io.publish(path, manifest, opts.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return OnnxQuantResult(final_path, final, source, time.perf_counter() - t0, speed)


def _write_static(onnx: object, model: Path, shape: tuple[int, ...], dest: Path) -> None:
    """A copy of ``model`` whose input is fixed to ``shape`` (batch 1): shape inference then reaches every node."""
    proto = onnx.load(str(model))  # type: ignore[attr-defined]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, shape, strict=True):
        dim.Clear()
        dim.dim_value = value
    del proto.graph.value_info[:]  # stale symbolic shapes; quant_pre_process infers them again
    onnx.save(proto, str(dest))  # type: ignore[attr-defined]


def _normalization(opts: OnnxQuantOptions, meta: ModelMetadata) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean_meta, std_meta = meta.normalization or manifest_io.PIXELS_0_1
    return opts.mean or mean_meta, opts.std or std_meta


def _labels(opts: OnnxQuantOptions, existing: ModelManifest | None, meta: ModelMetadata) -> tuple[tuple[str, ...] | None, str]:
    """The labels and where they came from: --labels, the source's manifest, then the source's own metadata."""
    if opts.labels:
        return opts.labels, "--labels"
    if existing is not None and existing.labels:
        return tuple(existing.labels), "the source's model.json"
    if meta.labels:
        return meta.labels, meta.sources.get("labels", "the source's metadata")
    return None, "class0..classN"


def _task(decoder: DecoderSpec) -> Task:
    return Task.classify if decoder.type == "classifier" else Task.detect


def head_nodes(proto: object) -> list[str]:
    """The detection head: every node from the outputs back to (and including) the last Conv/Gemm/MatMul."""
    graph = proto.graph  # type: ignore[attr-defined]
    producers = {out: node for node in graph.node for out in node.output}
    head: list[str] = []
    stack = [o.name for o in graph.output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in head:
            continue
        head.append(node.name)
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            stack.extend(node.input)
    return head


def _cap_ir_version(path: Path) -> None:
    import onnx

    proto = onnx.load(str(path))
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
