"""TFLite models on LiteRT (``ai_edge_litert``), falling back to ``tflite_runtime``.

Zero-copy: the input is written through the interpreter's ``tensor()`` view and outputs
are read through theirs. Those views must not outlive the next ``invoke()`` (the
interpreter refuses to run while one is alive), so a fresh view is taken per frame.

Dynamic inputs (``shape_signature`` -1) are resized once at load to batch 1 and
``options.input_size`` (``resize_tensor_input`` + ``allocate_tensors``); the output shapes
are then the interpreter's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agent.backends.base import Backend, BackendOptions, DeclaredTensor, fixed_input_shape
from agent.backends.delegates import delegate_problem
from agent.decoders.base import TensorInfo
from agent.errors import BackendUnavailableError, ManifestError, ModelFileError

log = logging.getLogger(__name__)

_TFLITE_IDENTIFIER = b"TFL3"


def _import_interpreter() -> tuple[Any, Callable[..., Any]]:
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, load_delegate  # type: ignore[no-redef]
        except ImportError:
            raise BackendUnavailableError(
                "no TFLite runtime installed: pip install ai-edge-litert (or tflite-runtime on Python 3.11 with numpy<2)"
            ) from None
        log.info("ai_edge_litert not found; using tflite_runtime")
    return Interpreter, load_delegate


def check_tflite_file(path: Path) -> None:
    """Refuse files that are not TFLite flatbuffers before the runtime sees them."""
    with path.open("rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or head[4:8] != _TFLITE_IDENTIFIER:
        raise ModelFileError(
            f"{path} is not a TFLite model (file identifier {head[4:8]!r}, expected {_TFLITE_IDENTIFIER!r}); "
            "the file is truncated, corrupt or of another format"
        )


def _info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _declared(detail: dict[str, Any]) -> DeclaredTensor:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    return DeclaredTensor(
        name=str(detail["name"]),
        dims=tuple(int(d) for d in dims),
        dtype=str(np.dtype(detail["dtype"])),
        scale=float(scale),
        zero_point=int(zero_point),
    )


class LiteRTBackend(Backend):
    type_key: ClassVar[str] = "litert"
    suffixes: ClassVar[tuple[str, ...]] = (".tflite",)

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        super().__init__(model_path, options)
        self._resized = False
        check_tflite_file(model_path)
        interpreter_cls, load_delegate = _import_interpreter()
        delegates = self._load_delegates(load_delegate)
        try:
            self._interp = interpreter_cls(
                model_path=str(model_path), num_threads=options.threads, experimental_delegates=delegates or None
            )
            self._fix_input_shape()
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            if delegates:
                log.warning("delegate %s failed on %s (%s); falling back to CPU", options.delegate, model_path, exc)
                self.delegate_in_use = None
                self._interp = interpreter_cls(model_path=str(model_path), num_threads=options.threads)
                self._fix_input_shape()
                self._allocate()
            elif self._resized:
                self._allocate()  # raises the error naming the input size
            else:
                raise ModelFileError(f"{model_path} cannot be loaded by LiteRT: {exc}") from None
        if any(_declared(d).dynamic for d in self._interp.get_output_details()):
            self._interp.invoke()  # shapes computed in the graph are known only after one run (a dry run at load)
        in_details = self._interp.get_input_details()
        self._input = _info(in_details[0])
        self._outputs = [_info(d) for d in self._interp.get_output_details()]
        self._input_view = self._interp.tensor(in_details[0]["index"])
        self._output_views = [self._interp.tensor(d["index"]) for d in self._interp.get_output_details()]

    def _fix_input_shape(self) -> None:
        """Dynamic input (shape_signature -1): batch 1 and ``options.input_size``, before the first allocation."""
        details = self._interp.get_input_details()
        if len(details) != 1:
            raise ModelFileError(f"{self.model_path} has {len(details)} inputs; only single-image-input models are supported")
        shape = fixed_input_shape(_declared(details[0]), self.options.input_size, self.model_path)
        self._resized = tuple(int(d) for d in details[0]["shape"]) != shape
        if self._resized:
            self._interp.resize_tensor_input(details[0]["index"], list(shape), strict=False)

    def _allocate(self) -> None:
        try:
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            shape = list(self._interp.get_input_details()[0]["shape"])
            raise ManifestError(
                f"{self.model_path}: LiteRT cannot run the model at input shape {shape} ({exc}); "
                "check model.input_size (or the manifest's input.width/input.height)"
            ) from None

    @classmethod
    def declared_tensors(cls, model_path: Path) -> tuple[list[DeclaredTensor], list[DeclaredTensor]]:
        check_tflite_file(model_path)
        interpreter_cls, _ = _import_interpreter()
        try:
            interp = interpreter_cls(model_path=str(model_path), num_threads=1)
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{model_path} cannot be loaded by LiteRT: {exc}") from None
        return [_declared(d) for d in interp.get_input_details()], [_declared(d) for d in interp.get_output_details()]

    def _load_delegates(self, load_delegate: Callable[..., Any]) -> list[Any]:
        if not self.options.delegate:
            return []
        problem = delegate_problem(self.options.delegate)  # before load_delegate: it tracebacks on a non-delegate file
        if problem is not None:
            log.warning("delegate %s %s; running %s on the CPU", self.options.delegate, problem, self.model_path)
            return []
        try:
            delegate = load_delegate(self.options.delegate, self.options.delegate_options or None)
        except (ValueError, OSError, RuntimeError, AttributeError) as exc:
            log.warning("cannot load delegate %s (%s); running %s on the CPU", self.options.delegate, exc, self.model_path)
            return []
        self.delegate_in_use = self.options.delegate
        log.info("using delegate %s", self.options.delegate)
        return [delegate]

    @property
    def input(self) -> TensorInfo:
        return self._input

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def input_array(self) -> np.ndarray:
        return self._input_view()  # type: ignore[no-any-return]

    def invoke(self) -> None:
        self._interp.invoke()

    def output_arrays(self) -> list[np.ndarray]:
        return [view() for view in self._output_views]

    def fork(self) -> LiteRTBackend:
        # An interpreter's tensors are its own: a second context is a second interpreter.
        return LiteRTBackend(self.model_path, self.options)

    def close(self) -> None:
        self._input_view = self._output_views = None  # type: ignore[assignment]
        self._interp = None
