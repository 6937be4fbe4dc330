"""ONNX models on ONNX Runtime's CPU execution provider, with IO binding.

The input is a preallocated numpy array bound to the session (``OrtValue`` wrapping it
without a copy), so the pipeline writes the frame straight into the memory ORT reads.
Outputs are bound to preallocated arrays too; ORT writes into them. Intra-op threads are
set explicitly and spinning is off: idle spinning burns a Pi's cores and heats it for nothing.

Dynamic axes: the batch is fixed to 1 and dynamic spatial axes to ``options.input_size``
through ORT's free-dimension overrides (symbolic dims), never by rewriting the file. Output
shapes then come from the session; where ORT cannot infer them (unnamed dims, shapes computed
in the graph), two dry runs at load learn them. Only outputs whose size depends on the data
(in-graph NMS with a variable count) are left for ORT to allocate per run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agent.backends.base import Backend, BackendOptions, DeclaredTensor, Dim, fixed_input_shape
from agent.decoders.base import TensorInfo
from agent.errors import BackendUnavailableError, ManifestError, ModelFileError

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
        raise BackendUnavailableError(
            "ONNX Runtime is not installed (the plain install runs .tflite models only): pip install 'edge-agent[onnx]', "
            "or scripts/install.sh --with-onnx on a Pi"
        ) from None
    return onnxruntime


def _static_shape(shape: list[Any]) -> tuple[int, ...] | None:
    if all(isinstance(d, int) and d > 0 for d in shape):
        return tuple(int(d) for d in shape)
    return None


def _dims(shape: list[Any]) -> tuple[Dim, ...]:
    """ORT's shape (ints, symbolic names, None) -> declared dims (None becomes -1)."""
    return tuple(d if isinstance(d, int | str) and d != "" else -1 for d in shape)


def _declared(arg: Any) -> DeclaredTensor:
    return DeclaredTensor(arg.name, _dims(arg.shape), str(np.dtype(_ORT_TYPES.get(arg.type, np.float32))))


def _session_options(ort: Any, threads: int) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def _open_session(ort: Any, model_path: Path, opts: Any) -> Any:
    try:
        return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind exception types
        raise ModelFileError(
            f"{model_path} cannot be loaded by ONNX Runtime (truncated, corrupt or not an ONNX model?): {exc}"
        ) from None


def _overrides(declared: DeclaredTensor, shape: tuple[int, ...], model_path: Path) -> dict[str, int]:
    """Symbolic dim name -> size; a name used on two axes must get one size."""
    found: dict[str, int] = {}
    for dim, size in zip(declared.dims, shape, strict=True):
        if isinstance(dim, str) and found.setdefault(dim, size) != size:
            raise ManifestError(
                f"{model_path}: input {declared.name!r} {list(declared.dims)} uses the name {dim!r} for two axes, so "
                f"they must be equal, but the input size asks for {list(shape)}; set model.input_size to a square size"
            )
    return found


class _SessionState:
    """What the contexts of one model share: the session and the shapes learnt at load."""

    def __init__(self, sess: Any, input_info: TensorInfo, outputs: list[TensorInfo], fixed: list[bool]) -> None:
        self.sess = sess
        self.input_info = input_info
        self.outputs = outputs
        self.fixed = fixed  # per output: shape known at load (preallocated) or data-dependent


class OnnxRuntimeBackend(Backend):
    type_key: ClassVar[str] = "onnxruntime"
    suffixes: ClassVar[tuple[str, ...]] = (".onnx", ".ort")

    def __init__(self, model_path: Path, options: BackendOptions, shared: _SessionState | None = None) -> None:
        super().__init__(model_path, options)
        ort = _import_ort()
        if shared is None:  # a fork shares the session (weights loaded once) and gets its own buffers and binding
            if options.delegate:
                log.warning("delegate %s ignored: delegates apply to TFLite models only", options.delegate)
            shared = self._load(ort)
        self._shared = shared
        self._sess = shared.sess
        self._bind(ort)

    @classmethod
    def declared_tensors(cls, model_path: Path) -> tuple[list[DeclaredTensor], list[DeclaredTensor]]:
        sess = _open_session(_import_ort(), model_path, _session_options(_import_ort(), 1))
        return [_declared(a) for a in sess.get_inputs()], [_declared(a) for a in sess.get_outputs()]

    def _load(self, ort: Any) -> _SessionState:
        model_path, options = self.model_path, self.options
        sess = _open_session(ort, model_path, _session_options(ort, options.threads))
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{model_path} has {len(inputs)} inputs; only single-image-input models are supported")
        declared = _declared(inputs[0])
        shape = fixed_input_shape(declared, options.input_size, model_path)
        names = _overrides(declared, shape, model_path)
        if names:  # fix symbolic axes in the session itself: ORT then plans static shapes throughout
            opts = _session_options(ort, options.threads)
            for name, size in names.items():
                opts.add_free_dimension_override_by_name(name, size)
            try:
                sess = _open_session(ort, model_path, opts)
            except ModelFileError as exc:  # it loaded without the overrides: the size is what it refuses
                raise ManifestError(
                    f"{model_path}: the model does not run with {names} (input {declared.name!r} {list(declared.dims)} "
                    f"at {list(shape)}): {str(exc).split(': ', 1)[-1]}\nSet model.input_size (or the manifest's "
                    "input.width/input.height) to a size the model supports"
                ) from None
        input_info = TensorInfo(declared.name, shape, np.dtype(declared.dtype))
        outputs, fixed = self._output_shapes(sess, input_info)
        return _SessionState(sess, input_info, outputs, fixed)

    def _output_shapes(self, sess: Any, input_info: TensorInfo) -> tuple[list[TensorInfo], list[bool]]:
        metas = sess.get_outputs()
        known = [_static_shape(o.shape) for o in metas]
        if any(s is None for s in known):
            # ORT could not infer them: two dry runs (blank and noise) learn them; a shape that differs is data-dependent
            rng = np.random.default_rng(0)
            probes = [
                np.zeros(input_info.shape, input_info.dtype),
                rng.integers(0, 128, input_info.shape).astype(input_info.dtype),
            ]
            try:
                runs = [sess.run(None, {input_info.name: probe}) for probe in probes]
            except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind exception types
                raise ManifestError(
                    f"{self.model_path}: the model does not run at input shape {list(input_info.shape)} ({exc}); "
                    "check model.input_size (or the manifest's input.width/input.height) against the sizes it supports"
                ) from None
            for i, shape in enumerate(known):
                if shape is None and runs[0][i].shape == runs[1][i].shape and runs[0][i].size:
                    known[i] = tuple(int(d) for d in runs[0][i].shape)
        outputs = [
            TensorInfo(o.name, shape or _dims_or_unknown(o.shape), np.dtype(_ORT_TYPES.get(o.type, np.float32)))
            for o, shape in zip(metas, known, strict=True)
        ]
        return outputs, [s is not None for s in known]

    def _bind(self, ort: Any) -> None:
        shared = self._shared
        self._input = shared.input_info
        self._input_buf = np.zeros(self._input.shape, self._input.dtype)  # bound once; frames are written into it in place
        self._binding = self._sess.io_binding()
        self._binding.bind_ortvalue_input(self._input.name, ort.OrtValue.ortvalue_from_numpy(self._input_buf))
        self._output_bufs: list[np.ndarray | None] = []
        for out, fixed in zip(shared.outputs, shared.fixed, strict=True):
            if not fixed:
                self._binding.bind_output(out.name, "cpu")  # data-dependent size: ORT allocates per run
                self._output_bufs.append(None)
                continue
            buf = np.zeros(out.shape, out.dtype)
            self._binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_numpy(buf))
            self._output_bufs.append(buf)
        self._dynamic_outputs = not all(shared.fixed)

    @property
    def input(self) -> TensorInfo:
        return self._input

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._shared.outputs

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
        return OnnxRuntimeBackend(self.model_path, self.options, shared=self._shared)

    def close(self) -> None:
        self._binding = None
        self._sess = None


def _dims_or_unknown(shape: list[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)
