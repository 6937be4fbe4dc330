"""Keras / SavedModel -> float32 TFLite with the TF Lite converter; ONNX -> TFLite with onnx2tf (TF needed).

Quantization is NOT done here: every path hands a float model to converters.tflite_quant (LiteRT's
recommended two-step flow; the TF converter's own post-training quantization is deprecated).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from converters.errors import ModelLoadError, UnsupportedOpError
from converters.kinds import InputKind
from converters.progress import quiet
from converters.source import SourceModel
from converters.toolchain import require

#: what to try when the ONNX route cannot convert a model
ONNX_ALTERNATIVE = (
    "other route: convert the model's PyTorch source instead (an Ultralytics .pt, TorchScript, or "
    "'module:callable'; litert-torch, no TensorFlow), or quantize the ONNX itself with quantize-onnx"
)
#: what to try when the TF Lite converter cannot convert a Keras/SavedModel
TF_ALTERNATIVE = "other route: export the model to ONNX (tf2onnx) and convert the .onnx (onnx2tf), or use quantize-onnx"

# onnx2tf looks for this in its working directory and downloads it otherwise (onnx2tf #545)
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def export_keras_fp32(source: SourceModel, path: Path) -> None:
    tf = require("tensorflow", why="Keras / SavedModel -> TFLite")
    if source.kind is InputKind.keras:
        converter = tf.lite.TFLiteConverter.from_keras_model(source.handle)
    else:
        converter = (
            tf.lite.TFLiteConverter.from_saved_model(str(Path(str(source.handle))))
            if isinstance(source.handle, str | Path)
            else tf.lite.TFLiteConverter.from_concrete_functions([source.handle.signatures["serving_default"]], source.handle)
        )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops: the Pi runtime lacks them
    try:
        with quiet():
            path.write_bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError/RuntimeError
        raise _tf_error(exc) from None


def _tf_error(exc: Exception) -> Exception:
    text = str(exc)
    match = (
        re.search(r"'(tf\.[A-Za-z0-9_]+)' op is neither a custom op nor a flex op", text)
        or re.search(r"failed to legalize operation '([^']+)'", text)
        or re.search(r"op[s]? [`'\"]?([A-Za-z0-9_.]+)[`'\"]? (?:is|are) not supported", text)
    )
    if match:
        detail = f"the TF Lite converter has no builtin kernel for it ({text[:400]}); {TF_ALTERNATIVE}"
        return UnsupportedOpError(match.group(1), detail)
    return ModelLoadError(f"the TF Lite converter failed: {type(exc).__name__}: {text[:800]}\n{TF_ALTERNATIVE}")


def export_onnx_fp32(onnx_path: Path, path: Path, input_shape: tuple[int, ...]) -> None:
    """onnx2tf in an isolated temporary working directory (holding the sample file it would download).

    ``input_shape`` (batch 1, the ONNX input's own layout) is pinned into a dynamic-axis model first: onnx2tf
    otherwise traces placeholder dims and mis-transposes a YOLO head ("Dimensions must be equal, but are 2
    and 4"). Its own --overwrite_input_shape only reaches the optional onnxsim step, so we fold it ourselves.
    """
    onnx2tf = require("onnx2tf", why="ONNX -> TFLite")
    require("tensorflow", "convert-onnx", why="onnx2tf")
    input_name, dynamic = _check_onnx_ops(onnx_path)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="onnx2tf-") as tmp:
        # onnx2tf rewrites its input file in place (op naming): hand it a copy, never the user's model
        source = Path(tmp) / "source.onnx"
        if dynamic:
            pin_input_shape(onnx_path, input_name, input_shape, source)
        else:
            shutil.copyfile(onnx_path, source)
        np.save(Path(tmp) / ONNX2TF_SAMPLE, np.zeros((1, 8, 8, 3), np.float32))
        os.chdir(tmp)
        try:
            with quiet():
                onnx2tf.convert(
                    input_onnx_file_path=str(source),
                    output_folder_path=str(Path(tmp) / "out"),
                    non_verbose=True,
                    copy_onnx_input_output_names_to_tflite=True,
                    output_signaturedefs=True,
                )  # the quantizer calibrates per signature
        except SystemExit as exc:  # onnx2tf calls sys.exit on conversion errors
            raise ModelLoadError(
                f"onnx2tf failed to convert {onnx_path.name} (exit {exc.code}); see the log above.\n{ONNX_ALTERNATIVE}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - onnx2tf raises whatever TF raises
            raise ModelLoadError(
                f"onnx2tf failed on {onnx_path.name}: {type(exc).__name__}: {str(exc)[:600]}\n{ONNX_ALTERNATIVE}"
            ) from None
        finally:
            os.chdir(cwd)
        produced = sorted((Path(tmp) / "out").glob("*_float32.tflite"))
        if not produced:
            raise ModelLoadError(f"onnx2tf produced no float32 .tflite for {onnx_path.name}")
        path.write_bytes(produced[0].read_bytes())


def pin_input_shape(onnx_path: Path, input_name: str, input_shape: tuple[int, ...], out: Path) -> None:
    """Write ``onnx_path`` with a static ``input_shape`` and its shape arithmetic constant-folded.

    ONNX Runtime's basic graph optimizations (constant folding, provider-independent, standard ops only)
    turn the Shape -> Gather -> Concat chains of a dynamic export into constants once the input is static.
    """
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_path))
    graph_input = next(i for i in proto.graph.input if i.name == input_name)
    dims = graph_input.type.tensor_type.shape.dim
    for dim, value in zip(dims, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = int(value)
    for output in proto.graph.output:  # let shapes be re-inferred from the pinned input
        output.type.tensor_type.shape.Clear()
    del proto.graph.value_info[:]
    pinned = out.with_suffix(".pinned.onnx")
    onnx.save(proto, str(pinned))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3  # the relaxed output-shape merge warning is expected here
    ort.InferenceSession(str(pinned), options, providers=["CPUExecutionProvider"])
    pinned.unlink()


def _check_onnx_ops(onnx_path: Path) -> tuple[str, bool]:
    """Fail early, naming the op, on ONNX ops onnx2tf has no converter for; return (input name, has dynamic dims)."""
    onnx = require("onnx", "convert-onnx")
    import importlib.util

    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends
        raise ModelLoadError(f"{onnx_path} is not a valid ONNX model (truncated or corrupt?): {exc}") from None
    initializers = {i.name for i in proto.graph.initializer}
    graph_input = next(i for i in proto.graph.input if i.name not in initializers)
    dynamic = any(d.dim_value <= 0 for d in graph_input.type.tensor_type.shape.dim)
    spec = importlib.util.find_spec("onnx2tf.ops")
    if spec is None or not spec.submodule_search_locations:
        return graph_input.name, dynamic
    known = {p.stem for loc in spec.submodule_search_locations for p in Path(loc).glob("*.py")}
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in known:
            raise UnsupportedOpError(
                f"{node.domain + '.' if node.domain else ''}{node.op_type}",
                f"onnx2tf has no converter for it (node {node.name!r}); {ONNX_ALTERNATIVE}",
            )
    return graph_input.name, dynamic
