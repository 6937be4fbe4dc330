"""Console entry points: ``convert-to-tflite`` and ``quantize-onnx`` (argument parsing and exit codes only)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.cli_conventions import add_version_everywhere

if TYPE_CHECKING:
    from agent.manifest import DecoderSpec
    from agent.model_metadata import ModelMetadata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF/LiteRT C++ info logs would bury the progress bars


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        w, h = (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-size {text!r}: use N or WxH, e.g. 640 or 640x480") from None
    return w, h


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="convert-to-tflite",
        description="Convert a detector to TFLite with a manifest (model.json, also embedded) and an optional accuracy report.",
    )
    p.add_argument(
        "model",
        help="model file (.pt TorchScript/pickled, .pt2, .onnx, .keras/.h5), SavedModel dir, or 'package.module:callable'",
    )
    p.add_argument("-o", "--out", type=Path, default=Path("converted"), help="output folder (default ./converted)")
    p.add_argument(
        "--quantize",
        choices=["fp32", "fp16", "dynamic", "int8"],
        default="fp32",
        help="weights/activations: fp32 (default), fp16 weights, dynamic-range int8 weights, or full int8 (needs --calibration)",
    )
    p.add_argument("--calibration", type=Path, help="folder of representative images (needed for int8)")
    p.add_argument("--calibration-limit", type=int, default=300, help="use at most this many calibration images")
    p.add_argument(
        "--io-type",
        choices=["float32", "uint8", "int8"],
        default="float32",
        help="int8 only: input type (uint8 takes camera bytes directly)",
    )
    p.add_argument(
        "--input-size",
        type=_size,
        help="N or WxH (needed for PyTorch models without input_size and "
        "dynamic-axis ONNX without imgsz metadata; must match a static model)",
    )
    p.add_argument(
        "--nhwc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wrap channel-first models so the TFLite input is HWC like camera frames (default on)",
    )
    p.add_argument(
        "--labels",
        type=Path,
        help="labels file: one per line, JSON list, or COCO json "
        "(default: the labels the source model carries, e.g. Ultralytics names)",
    )
    p.add_argument(
        "--decoder",
        choices=["yolov8", "yolov5", "end2end", "ssd_postprocess", "classifier"],
        help="output format (auto-detected from the outputs when omitted)",
    )
    p.add_argument(
        "--boxes-normalized",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --decoder: boxes in 0..1 of the input (default: measured)",
    )
    p.add_argument("--weights", type=Path, help="state dict for a 'module:callable' factory")
    p.add_argument("--name", help="model name in the manifest (default: the source file stem)")
    p.add_argument("--model-version", dest="version", default="1.0.0", help="model version in the manifest")
    p.add_argument("--mean", type=_floats, help="per-channel mean in pixel units (default: the source's metadata, else 0)")
    p.add_argument("--std", type=_floats, help="per-channel std in pixel units (default: the source's metadata, else 255)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="the manifest's score threshold (default 0.5)")
    p.add_argument(
        "--quantize-head",
        action="store_true",
        help="int8: quantize the detection head too (default keeps it float; see README 'head guard')",
    )
    p.add_argument("--validate", type=Path, help="folder of images (+ COCO json or YOLO txt labels): write a report")
    p.add_argument("--max-map-drop", type=float, help="with --validate: exit 3 when mAP@0.5:0.95 drops more (points)")
    p.add_argument(
        "--compare-with",
        type=Path,
        action="append",
        default=[],
        metavar="MODEL",
        help="with --validate: also report this model (e.g. Ultralytics' own int8 .tflite) on the same images",
    )
    add_version_everywhere(p, f"{p.prog} {__version__}")
    return p


def _decoder(args: argparse.Namespace) -> DecoderSpec | None:
    if args.decoder is None:
        return None
    from pydantic import TypeAdapter

    from agent.manifest import DecoderSpec

    data: dict[str, object] = {"type": args.decoder}
    if args.boxes_normalized is not None:
        data["boxes_normalized"] = args.boxes_normalized
    return TypeAdapter(DecoderSpec).validate_python(data)


def convert_main(argv: list[str] | None = None) -> int:
    args = convert_parser().parse_args(argv)
    import shutil
    import tempfile

    from agent.errors import DecoderError
    from agent.manifest import Thresholds
    from converters import manifest_io
    from converters.convert import ConvertOptions, cleanup, convert_to_tflite
    from converters.errors import ConverterError, OptionError

    # written into a staging folder and moved into --out at the end: a failed run leaves no half-written model
    staging = Path(tempfile.mkdtemp(prefix="convert-to-tflite-out-"))
    try:
        if Path(args.model).suffix.lower() == ".onnx":  # the ONNX route runs the source in ONNX Runtime (an extra now)
            from converters.toolchain import require

            require("onnxruntime", "convert-onnx", why="ONNX input")
        meta = manifest_io.source_metadata(Path(args.model))
        manifest_io.check_task(meta, "convert-to-tflite")
        labels, labels_from = _labels_and_origin(args.labels, meta)
        dynamic = manifest_io.onnx_input_is_dynamic(Path(args.model))
        mean, std = _normalization(args.mean, args.std, meta)
        opts = ConvertOptions(
            model=args.model,
            out=staging,
            quantize=args.quantize,
            calibration=args.calibration,
            calibration_limit=args.calibration_limit,
            io_type=args.io_type,
            input_size=args.input_size or (meta.input_size if dynamic else None),
            nhwc=args.nhwc,
            labels=labels,
            decoder=_decoder(args),
            weights=args.weights,
            name=args.name,
            version=args.version,
            mean=mean,
            std=std,
            thresholds=Thresholds(score=args.score_threshold),
            quantize_head=args.quantize_head,
        )
        try:
            result = convert_to_tflite(opts)
        except DecoderError as exc:
            if labels is None:  # no labels to blame: the outputs are in no format the agent decodes
                raise OptionError(f"{args.model}: {exc}\nFix: pass --decoder TYPE (and --labels FILE).") from None
            raise OptionError(
                f"{len(labels)} labels ({labels_from}) do not match the class count of {args.model}: {exc}\n"
                "Fix: pass --labels FILE listing exactly the model's classes, in class-id order."
            ) from None
        result.model_path = manifest_io.move_outputs(staging, args.out) / result.model_path.name
        size = result.model_path.stat().st_size
        print(
            f"wrote {result.model_path} ({size / 1024:.0f} KiB, {args.quantize}) and "
            f"{result.model_path.parent / 'model.json'} in {result.seconds:.1f} s"
        )
        try:
            if args.validate:
                from converters.report import validate_conversion

                report = validate_conversion(result, args.validate, args.out, tuple(args.compare_with))
                print(report.summary())
                report.check_gate(args.max_map_drop)
        finally:
            cleanup(result)
    except ConverterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return 0


def _labels_and_origin(path: Path | None, meta: ModelMetadata) -> tuple[tuple[str, ...] | None, str]:
    """--labels wins; else the labels the source model carries (Ultralytics ``names``), with where they came from."""
    from converters.manifest_io import read_labels

    if path is not None:
        return read_labels(path), "--labels"
    return meta.labels, meta.sources.get("labels", "the source's metadata")


def _normalization(
    mean: tuple[float, ...] | None, std: tuple[float, ...] | None, meta: ModelMetadata
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """--mean/--std win; else the source's metadata; else pixels / 255."""
    from converters.manifest_io import PIXELS_0_1

    meta_mean, meta_std = meta.normalization or PIXELS_0_1
    return mean or meta_mean, std or meta_std


def quantize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quantize-onnx",
        description="Static int8 quantization of an ONNX model with ONNX "
        "Runtime (detection head kept in float), with a manifest; labels, input size and "
        "normalization come from the source's metadata when it has them (Ultralytics exports).",
    )
    p.add_argument("model", type=Path, help="the float ONNX model to quantize")
    p.add_argument("--calibration", type=Path, required=True, help="folder of representative images")
    p.add_argument("--calibration-limit", type=int, default=300, help="use at most this many calibration images")
    p.add_argument("-o", "--out", type=Path, default=Path("quantized"), help="output folder (default ./quantized)")
    p.add_argument(
        "--input-size",
        type=_size,
        help="N or WxH: the size to fix a dynamic-axis model at (default: the model's imgsz metadata); must match a static model",
    )
    p.add_argument(
        "--method", choices=["minmax", "entropy", "percentile"], default="minmax", help="calibration method (default minmax)"
    )
    p.add_argument(
        "--format",
        choices=["qdq", "qoperator"],
        default="qdq",
        help="QDQ (Quantize/DequantizeLinear pairs, default) or QOperator (fused QLinearConv kernels)",
    )
    p.add_argument(
        "--activations",
        choices=["int8", "uint8"],
        help="activation type: int8 (S8S8, the QDQ default) or uint8 (U8S8, the QOperator default; x86's fast path)",
    )
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per-channel)")
    p.add_argument("--quantize-head", action="store_true", help="quantize the detection head too (not recommended)")
    p.add_argument(
        "--no-speed-check", dest="speed_check", action="store_false", help="skip timing the float and int8 models on this machine"
    )
    p.add_argument("--labels", type=Path, help="labels file (default: the source's model.json or metadata)")
    p.add_argument("--name", help="model name in the manifest (default: the source file stem)")
    p.add_argument("--model-version", dest="version", default="1.0.0", help="model version in the manifest")
    p.add_argument("--mean", type=_floats, help="per-channel mean in pixel units (default: metadata, else 0)")
    p.add_argument("--std", type=_floats, help="per-channel std in pixel units (default: metadata, else 255)")
    p.add_argument("--validate", type=Path, help="folder of images (+ COCO json or YOLO txt labels): write a report")
    p.add_argument("--max-map-drop", type=float, help="with --validate: exit 3 when mAP@0.5:0.95 drops more (points)")
    add_version_everywhere(p, f"{p.prog} {__version__}")
    return p


def quantize_main(argv: list[str] | None = None) -> int:
    args = quantize_parser().parse_args(argv)
    from agent.errors import DecoderError
    from converters.errors import ConverterError
    from converters.manifest_io import read_labels
    from converters.onnx_quant import OnnxQuantOptions, quantize_onnx

    try:
        result = quantize_onnx(
            OnnxQuantOptions(
                model=args.model,
                out=args.out,
                calibration=args.calibration,
                calibration_limit=args.calibration_limit,
                method=args.method,
                per_channel=not args.per_tensor,
                quantize_head=args.quantize_head,
                labels=read_labels(args.labels) if args.labels else None,
                name=args.name,
                version=args.version,
                mean=args.mean,
                std=args.std,
                input_size=args.input_size,
                format=args.format,
                activations=args.activations,
                speed_check=args.speed_check,
            )
        )
        print(f"wrote {result.model_path} ({result.model_path.stat().st_size / 1024:.0f} KiB) in {result.seconds:.1f} s")
        if result.speed is not None:
            print(result.speed.summary())
        if args.validate:
            from converters.report import validate_conversion

            report = validate_conversion(result, args.validate, args.out)
            print(report.summary())
            report.check_gate(args.max_map_drop)
    except ConverterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except DecoderError as exc:  # the outputs fit no decoder the agent has: bad input, not a crash
        print(f"error: {args.model}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(convert_main())
