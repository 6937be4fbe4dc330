"""``quantize-onnx``: static int8 QDQ with ONNX Runtime's quantization tools, detection head kept float."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent import ModelManifest
from agent.decoders.base import TensorInfo
from agent.manifest import DecoderSpec, InputSpec, Layout, Normalization, Task, TensorDType, Thresholds, find_manifest
from converters import head_guard, manifest_io
from converters.calibration import load_calibration
from converters.errors import ModelLoadError
from converters.kinds import InputKind
from converters.progress import quiet
from converters.source import SourceModel, load_source
from converters.toolchain import require, tool_versions

MAX_IR_VERSION = 9  # the agent allows onnxruntime >= 1.17, which loads at most IR 9
_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


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
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (255.0, 255.0, 255.0)
    decoder: DecoderSpec | None = None


@dataclass(slots=True)
class OnnxQuantResult:
    model_path: Path
    manifest: ModelManifest
    source: SourceModel
    seconds: float


class _Reader:
    """onnxruntime CalibrationDataReader over preprocessed images."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        self._name, self._images, self._i = name, images, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._images):
            return None
        self._i += 1
        return {self._name: self._images[self._i - 1][None]}

    def rewind(self) -> None:
        self._i = 0


def quantize_onnx(opts: OnnxQuantOptions) -> OnnxQuantResult:
    t0 = time.perf_counter()
    onnx = require("onnx", "convert-onnx", why="quantize-onnx")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    source = load_source(str(opts.model), InputKind.onnx, None, None)
    layout = source.layout
    h, w = source.input_shape[2:4] if layout is Layout.NCHW else source.input_shape[1:3]
    spec = InputSpec(width=w, height=h, layout=layout, dtype=TensorDType.float32,
                     normalization=Normalization(mean=opts.mean, std=opts.std))
    images = load_calibration(opts.calibration, spec, opts.calibration_limit)
    existing, _ = find_manifest(opts.model)
    outputs = [(TensorInfo(f"output{i}", o.shape, np.dtype(np.float32)), o)
               for i, o in enumerate(source.forward(images[:1]))]
    labels = opts.labels or (existing.labels if existing else None)
    decoder = opts.decoder or (existing.decoder if existing else None)
    if labels is None or decoder is None:
        from converters.convert import _default_labels, _guess_decoder

        labels = labels or _default_labels(outputs)
        decoder = decoder or _guess_decoder(Path(), outputs, len(labels))
    guard = head_guard.inspect(decoder, outputs)
    work = Path(tempfile.mkdtemp(prefix="quantize-onnx-"))
    try:
        prep = work / "prep.onnx"
        try:
            with quiet():
                quant_pre_process(str(opts.model), str(prep), skip_symbolic_shape=True)
            proto = onnx.load(str(prep))
        except Exception as exc:  # noqa: BLE001 - shape inference raises many types
            raise ModelLoadError(f"ONNX pre-processing (shape inference) failed for {opts.model}: {exc}") from None
        excluded = [] if opts.quantize_head else head_nodes(proto)
        opts.out.mkdir(parents=True, exist_ok=True)
        path = opts.out / "model.onnx"
        input_name = proto.graph.input[0].name
        with quiet():
            quantize_static(str(prep), str(path), _Reader(input_name, images), quant_format=QuantFormat.QDQ,
                            per_channel=opts.per_channel, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                            calibrate_method=getattr(CalibrationMethod, _METHODS[opts.method]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _cap_ir_version(path)
    qparams: dict[str, object] = {
        "mode": "int8", "method": "onnxruntime quantize_static", "format": "QDQ", "calibration": opts.method,
        "weights": f"int8 symmetric {'per-channel' if opts.per_channel else 'per-tensor'}",
        "activations": "int8 per-tensor", "calibration_images": len(images), "input_type": "float32",
        "float_nodes": excluded, "head_guard": guard.as_dict(not opts.quantize_head)}
    manifest = ModelManifest(
        name=opts.name or (existing.name if existing else opts.model.stem), version=opts.version,
        task=Task.classify if decoder.type == "classifier" else Task.detect, input=spec, labels=labels,
        decoder=decoder, thresholds=existing.thresholds if existing else Thresholds(), quantization=qparams,
        provenance=manifest_io.provenance(str(opts.model), "onnx", "onnxruntime.quantization", tool_versions(), {}))
    final = manifest_io.finalize(path, manifest)
    return OnnxQuantResult(path, final, source, time.perf_counter() - t0)


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
