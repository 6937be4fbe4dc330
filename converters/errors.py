"""Typed converter errors: each names the offending file, option or op and says what to do."""

from __future__ import annotations


class ConverterError(Exception):
    """Base of every error ``convert-to-tflite`` / ``quantize-onnx`` report to the user (exit code 2)."""

    exit_code = 2


class ToolchainMissingError(ConverterError):
    """A conversion toolchain (an optional extra) is not installed in this interpreter."""


class UnknownInputKindError(ConverterError):
    """The model argument is none of the supported input kinds."""


class ModelLoadError(ConverterError):
    """The source model file exists but cannot be read (corrupt, truncated, wrong format)."""


class UnsupportedOpError(ConverterError):
    """The conversion path cannot lower an operator of the source model."""

    def __init__(self, op: str, detail: str) -> None:
        super().__init__(f"operator {op!r} cannot be converted by this path: {detail}")
        self.op = op


class CalibrationError(ConverterError):
    """The calibration folder is missing, empty or unreadable."""


class ParityError(ConverterError):
    """The float export does not reproduce the source model (a converter bug or an unsupported construct)."""


class OptionError(ConverterError):
    """Options that cannot work together or with this model."""


class AccuracyGateError(ConverterError):
    """``--max-map-drop`` was exceeded (exit code 3: the files are written, the gate failed)."""

    exit_code = 3
