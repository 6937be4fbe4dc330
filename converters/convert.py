"""``convert-to-tflite``'s engine: source -> float32 .tflite (+ parity) -> quantize -> manifest -> report."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent import ModelManifest
from agent.decoders import detect_decoder
from agent.decoders.base import TensorInfo
from agent.manifest import DecoderSpec, InputSpec, Layout, Normalization, ResizeMode, Task, TensorDType, Thresholds
from converters import head_guard, manifest_io
from converters import tflite_graph as graph
from converters.calibration import image_files, load_calibration
from converters.errors import OptionError, ParityError
from converters.kinds import PATH_OF_KIND, InputKind, detect_kind
from converters.progress import progress_bar
from converters.source import SourceModel, load_source
from converters.tflite_quant import quantize
from converters.toolchain import tool_versions

PARITY_IMAGES = 4
SSD_POSTPROCESS = "TFLite_Detection_PostProcess"


@dataclass(slots=True)
class ConvertOptions:
    model: str
    out: Path
    quantize: str = "fp32"
    calibration: Path | None = None
    calibration_limit: int = 300
    io_type: str = "float32"
    input_size: tuple[int, int] | None = None
    nhwc: bool = True
    labels: tuple[str, ...] | None = None
    decoder: DecoderSpec | None = None
    weights: Path | None = None
    name: str | None = None
    version: str = "1.0.0"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (255.0, 255.0, 255.0)
    thresholds: Thresholds = field(default_factory=Thresholds)
    quantize_head: bool = False  # True: let the int8 head be quantized too (not recommended)
    parity_tolerance: float = 1e-3  # max abs error / max(1, the output's largest magnitude)


@dataclass(slots=True)
class ConvertResult:
    model_path: Path
    manifest: ModelManifest
    source: SourceModel
    fp32_path: Path  # kept in the work dir for the report
    seconds: float
    workdir: Path


def convert_to_tflite(opts: ConvertOptions) -> ConvertResult:
    """Convert ``opts.model`` into ``opts.out/model.tflite`` + ``model.json``; raises ConverterError subclasses."""
    t0 = time.perf_counter()
    if opts.quantize not in ("fp32", "fp16", "dynamic", "int8"):
        raise OptionError(f"--quantize {opts.quantize!r}: choose fp32, fp16, dynamic or int8")
    if opts.io_type not in ("float32", "uint8", "int8"):
        raise OptionError(f"--io-type {opts.io_type!r}: choose float32, uint8 or int8")
    if opts.quantize == "int8" and opts.calibration is None:
        raise OptionError("--quantize int8 needs --calibration DIR (representative images, 300+ recommended)")
    kind = detect_kind(opts.model)
    source = load_source(opts.model, kind, opts.input_size, opts.weights)
    nhwc_out = opts.nhwc or source.layout is Layout.NHWC or kind is InputKind.onnx  # onnx2tf always emits NHWC
    layout = Layout.NHWC if nhwc_out else Layout.NCHW
    _, h, w = (source.input_shape[0], *((source.input_shape[2:4]) if source.layout is Layout.NCHW else source.input_shape[1:3]))
    float_spec = InputSpec(
        width=w, height=h, layout=layout, dtype=TensorDType.float32, normalization=Normalization(mean=opts.mean, std=opts.std)
    )
    if opts.calibration is not None:
        image_files(opts.calibration)  # checked before the (slow) export: a bad folder fails fast
    work = Path(tempfile.mkdtemp(prefix="convert-to-tflite-"))
    fp32 = work / "model_fp32.tflite"
    with step(f"converting ({PATH_OF_KIND[kind]}) to a float32 .tflite"):
        _export_fp32(source, kind, opts, nhwc_out, fp32)
    ssd = graph.has_custom_op(fp32, SSD_POSTPROCESS)
    if ssd:  # SSD exports take the whole frame stretched to the input (the OD API's fixed_shape_resizer)
        float_spec = float_spec.model_copy(update={"resize": ResizeMode.stretch})
    calibration = None
    if opts.calibration is not None:
        calibration = load_calibration(opts.calibration, float_spec, opts.calibration_limit, warn=opts.quantize == "int8")
    check = calibration[:PARITY_IMAGES] if calibration is not None else _random_inputs(float_spec)
    if ssd:
        # the source's post-process is a placeholder body that TF's converter replaces with the real op
        worst = None
        print(
            f"note: the graph ends in {SSD_POSTPROCESS}; the source's placeholder for it computes nothing real, so "
            "float parity is not checked against the source (validate with --validate and labelled images)"
        )
    else:
        worst = _parity(source, fp32, check, layout, opts.parity_tolerance)

    outputs = _fp32_outputs(fp32, check)
    labels = opts.labels or source.labels or _default_labels(outputs)
    decoder = opts.decoder or _guess_decoder(fp32, outputs, len(labels))
    guard = head_guard.inspect(decoder, outputs)
    float_head = opts.quantize == "int8" and (not opts.quantize_head or ssd)
    if opts.quantize == "int8" and opts.quantize_head and ssd:  # its outputs are float by the op's contract
        print(f"note: --quantize-head ignored: {SSD_POSTPROCESS} and the head feeding it stay float")
    if opts.quantize == "int8" and opts.quantize_head and guard.mixed_ranges:
        print(f"warning: {guard.message}; --quantize-head keeps it int8 anyway: expect lost detections")

    opts.out.mkdir(parents=True, exist_ok=True)
    model_path = opts.out / "model.tflite"
    qcal = calibration if opts.quantize == "int8" else None  # already in the TFLite input layout
    pixel_range = _pixel_range(opts.mean, opts.std)
    with step(f"quantizing ({opts.quantize})"):
        qparams = quantize(fp32, model_path, opts.quantize, qcal, opts.io_type, float_head, pixel_range)
    qparams["head_guard"] = guard.as_dict(float_head)
    qparams["fp32_parity_max_abs"] = float(f"{worst:.3g}") if worst is not None else f"not checked ({SSD_POSTPROCESS})"
    spec = float_spec.model_copy(update={"dtype": TensorDType(opts.io_type)}) if opts.quantize == "int8" else float_spec
    manifest = ModelManifest(
        name=opts.name or source.name,
        version=opts.version,
        task=Task.classify if decoder.type == "classifier" else Task.detect,
        input=spec,
        labels=labels,
        decoder=decoder,
        thresholds=opts.thresholds,
        quantization=qparams,
        provenance=manifest_io.provenance(
            opts.model, kind.value, PATH_OF_KIND[kind], tool_versions(), {"seconds": round(time.perf_counter() - t0, 1)}
        ),
    )
    final = manifest_io.finalize(model_path, manifest)
    return ConvertResult(model_path, final, source, fp32, time.perf_counter() - t0, work)


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """A spinner with elapsed time for one long step (on the real stdout: the toolchains' chatter is hidden)."""
    with progress_bar(sys.stdout) as bar:
        task = bar.add_task(description, total=1)
        yield
        bar.advance(task)


def _export_fp32(source: SourceModel, kind: InputKind, opts: ConvertOptions, nhwc: bool, path: Path) -> None:
    if PATH_OF_KIND[kind] == "litert-torch":
        from converters.torch_path import export_fp32

        export_fp32(source.handle, source.input_shape, nhwc, path)
    elif kind is InputKind.onnx:
        from converters.tf_path import export_onnx_fp32

        export_onnx_fp32(Path(opts.model), path, source.input_shape)
    else:
        from converters.tf_path import export_keras_fp32

        export_keras_fp32(source, path)


def _random_inputs(spec: InputSpec) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((PARITY_IMAGES, *spec.tensor_shape()[1:]), dtype=np.float32)


def to_source_layout(x: np.ndarray, tflite_layout: Layout, source: SourceModel) -> np.ndarray:
    """A batch in the TFLite input layout -> the source's layout."""
    if tflite_layout is source.layout:
        return x
    return x.transpose(0, 3, 1, 2) if tflite_layout is Layout.NHWC else x.transpose(0, 2, 3, 1)


def _run_tflite(path: Path, batch: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.ascontiguousarray(batch, np.float32))
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def _parity(source: SourceModel, fp32: Path, inputs: np.ndarray, layout: Layout, tolerance: float) -> float:
    """Max abs error of the float32 .tflite vs the source (outputs matched by shape, any order), checked relative
    to each output's magnitude: YOLO boxes in input pixels (0..640) carry float32 round-off in pixels."""
    worst = worst_relative = 0.0
    for x in inputs:
        got = _run_tflite(fp32, x[None])
        expected = source.forward(to_source_layout(x[None], layout, source))
        if len(got) != len(expected):
            raise ParityError(f"the float32 .tflite has {len(got)} outputs, the source has {len(expected)}")
        for e in expected:
            match = [g for g in got if g.size == e.size]
            if not match:
                raise ParityError(f"no .tflite output has the source output's shape {list(e.shape)}")
            error = min(float(np.abs(g.reshape(e.shape) - e).max()) for g in match)
            worst = max(worst, error)
            worst_relative = max(worst_relative, error / max(1.0, float(np.abs(e).max())))
    if worst_relative > tolerance:
        raise ParityError(
            f"the float32 .tflite differs from the source model by up to {worst:.3g} ({worst_relative:.3g} "
            f"of the output's range; tolerance {tolerance}): the converter produced a wrong graph or "
            "wrong weights; not continuing"
        )
    return worst


def _fp32_outputs(fp32: Path, inputs: np.ndarray) -> list[tuple[TensorInfo, np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(fp32), num_threads=1).get_output_details()
    values = [_run_tflite(fp32, x[None]) for x in inputs]
    # shapes from the produced arrays: a custom op's outputs (TFLite_Detection_PostProcess) have none before invoke
    return [
        (
            TensorInfo(d["name"], tuple(int(s) for s in values[0][i].shape), np.dtype(d["dtype"])),
            np.concatenate([v[i] for v in values]),
        )
        for i, d in enumerate(details)
    ]


def _default_labels(outputs: list[tuple[TensorInfo, np.ndarray]]) -> tuple[str, ...]:
    print("note: no --labels; naming classes class0..classN (pass --labels FILE for real names)")
    if len(outputs) == 1 and len(outputs[0][0].shape) == 3:
        rows = min(outputs[0][0].shape[1:])
        return tuple(f"class{i}" for i in range(max(1, rows - 4)))
    if len(outputs) == 1 and len(outputs[0][0].shape) == 2:
        return tuple(f"class{i}" for i in range(outputs[0][0].shape[1]))
    raise OptionError("cannot tell the class count from the outputs: pass --labels FILE")


def _guess_decoder(fp32: Path, outputs: list[tuple[TensorInfo, np.ndarray]], num_classes: int) -> DecoderSpec:
    spec = detect_decoder([t for t, _ in outputs], num_classes)
    if hasattr(spec, "boxes_normalized"):  # boxes in 0..1 or in input pixels: measured, not assumed
        spec = spec.model_copy(update={"boxes_normalized": head_guard.boxes_look_normalized(spec, outputs)})
    return spec


def _pixel_range(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[float, float]:
    lo = min((0.0 - m) / s for m, s in zip(mean, std, strict=False))
    hi = max((255.0 - m) / s for m, s in zip(mean, std, strict=False))
    return lo, hi


def cleanup(result: ConvertResult) -> None:
    shutil.rmtree(result.workdir, ignore_errors=True)
