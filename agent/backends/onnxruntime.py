"""ONNX models on ONNX Runtime's CPU execution provider, with IO binding.

The input is a preallocated numpy array bound to the session (``OrtValue`` wrapping it
without a copy), so the pipeline writes the frame straight into the memory ORT reads.
Outputs with static shapes are bound to preallocated arrays too; ORT writes into them.
Intra-op threads are set explicitly and spinning is off: idle spinning burns a Pi's
cores and heats it for nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agent.backends.base import Backend, BackendOptions
from agent.decoders.base import TensorInfo
from agent.errors import BackendUnavailableError, ModelFileError

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


def _static_shape(shape: list[Any], fallback: tuple[int, ...] | None = None) -> tuple[int, ...] | None:
    if all(isinstance(d, int) and d > 0 for d in shape):
        return tuple(int(d) for d in shape)
    return fallback


class OnnxRuntimeBackend(Backend):
    type_key: ClassVar[str] = "onnxruntime"
    suffixes: ClassVar[tuple[str, ...]] = (".onnx", ".ort")

    def __init__(
        self,
        model_path: Path,
        options: BackendOptions,
        input_shape: tuple[int, ...] | None = None,
        session: Any = None,
    ) -> None:
        super().__init__(model_path, options)
        self._input_shape_hint = input_shape
        ort = _import_ort()
        if session is not None:  # a fork: same session (weights loaded once), own buffers and binding
            self._sess = session
            self._bind(ort)
            return
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = options.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        if options.delegate:
            log.warning("delegate %s ignored: delegates apply to TFLite models only", options.delegate)
        try:
            self._sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind exception types
            raise ModelFileError(f"{model_path} cannot be loaded by ONNX Runtime: {exc}") from None
        self._bind(ort)

    def _bind(self, ort: Any) -> None:
        model_path, input_shape = self.model_path, self._input_shape_hint
        inputs = self._sess.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{model_path} has {len(inputs)} inputs; only single-image-input models are supported")
        meta = inputs[0]
        shape = _static_shape(meta.shape, input_shape)
        if shape is None:
            raise ModelFileError(
                f"{model_path}: input {meta.name!r} has a dynamic shape {meta.shape}; give the input size in the manifest"
            )
        self._input = TensorInfo(meta.name, shape, np.dtype(_ORT_TYPES.get(meta.type, np.float32)))
        self._input_buf = np.zeros(shape, self._input.dtype)  # bound once; frames are written into it in place
        self._binding = self._sess.io_binding()
        self._binding.bind_ortvalue_input(meta.name, ort.OrtValue.ortvalue_from_numpy(self._input_buf))
        self._outputs: list[TensorInfo] = []
        self._output_bufs: list[np.ndarray | None] = []
        for out in self._sess.get_outputs():
            out_shape = _static_shape(out.shape)
            dtype = np.dtype(_ORT_TYPES.get(out.type, np.float32))
            self._outputs.append(TensorInfo(out.name, out_shape or tuple(-1 for _ in out.shape), dtype))
            if out_shape is None:
                self._binding.bind_output(out.name, "cpu")  # dynamic: ORT allocates per run
                self._output_bufs.append(None)
            else:
                buf = np.zeros(out_shape, dtype)
                self._binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_numpy(buf))
                self._output_bufs.append(buf)
        self._dynamic_outputs = any(b is None for b in self._output_bufs)

    @property
    def input(self) -> TensorInfo:
        return self._input

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def input_array(self) -> np.ndarray:
        return self._input_buf

    def invoke(self) -> None:
        self._sess.run_with_iobinding(self._binding)

    def output_arrays(self) -> list[np.ndarray]:
        if not self._dynamic_outputs:
            return self._output_bufs  # type: ignore[return-value]
        produced = self._binding.copy_outputs_to_cpu()
        return [buf if buf is not None else produced[i] for i, buf in enumerate(self._output_bufs)]

    def fork(self) -> OnnxRuntimeBackend:
        return OnnxRuntimeBackend(self.model_path, self.options, self._input_shape_hint, session=self._sess)

    def close(self) -> None:
        self._binding = None
        self._sess = None
