"""Output decoders: raw model outputs -> boxes normalized to the model input, one file per format.

``DECODERS`` discovers the plugins (any ``Decoder`` subclass with a ``type_key`` in this
package); ``build_decoder`` makes one from a manifest's decoder spec; ``detect_decoder``
guesses the spec from the output shapes when a model comes without a manifest.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import BaseModel

from agent.decoders._common import describe
from agent.decoders.base import DecodedOutput, Decoder, TensorInfo
from agent.errors import DecoderError
from agent.manifest import DecoderSpec, Thresholds
from agent.registry import Registry

__all__ = ["DECODERS", "DETECTION_ORDER", "DecodedOutput", "Decoder", "TensorInfo", "build_decoder", "detect_decoder"]

DECODERS: Registry[Decoder] = Registry(sys.modules[__name__], Decoder)

# Most specific first: a format is tried only if none before it claimed the outputs
# (e.g. a padded [1, N<=1000, 6] end-to-end result before a one-class YOLOv5 head).
DETECTION_ORDER = ("ssd_postprocess", "ssd_anchors", "classifier", "end2end", "yolov8", "yolov5")

_FORMATS = """Supported output formats (decoder.type):
  ssd_postprocess  4 outputs: boxes [1, N, 4], classes [1, N], scores [1, N], count [1] (any order)
  ssd_anchors      2 outputs: box regressors [1, A, 4+K], scores [1, A, C] (MediaPipe anchors)
  classifier       1 output:  [1, C]
  end2end          1 output:  [1, N, 6] with N <= 1000 (x1, y1, x2, y2, score, class)
  yolov8           1 output:  [1, 4+C, N] or [1, N, 4+C]
  yolov5           1 output:  [1, N, 5+C]"""


def build_decoder(
    spec: BaseModel,
    outputs: Sequence[TensorInfo],
    input_size: tuple[int, int],
    num_classes: int,
    thresholds: Thresholds,
) -> Decoder:
    """The decoder plugin for ``spec.type``, validated against the model's outputs (raises DecoderError)."""
    key = getattr(spec, "type", None)
    try:
        plugin = DECODERS.get(str(key))
    except KeyError as exc:
        raise DecoderError(f"unknown decoder.type {key!r} in model.json; known: {', '.join(DECODERS.keys())}") from exc
    return plugin(spec, outputs, input_size, num_classes, thresholds)


def detect_decoder(outputs: Sequence[TensorInfo], num_classes: int | None) -> DecoderSpec:
    """Guess the decoder spec from the output tensors, asking each format in ``DETECTION_ORDER``.

    ``num_classes`` (the label count, when known) decides between 4+C and 5+C layouts. Guessed
    YOLO and end-to-end specs assume boxes in input pixels (``boxes_normalized=False``); a
    manifest should say otherwise for exports that emit 0..1 boxes. Raises DecoderError listing
    the outputs and the supported formats when nothing matches.
    """
    for key in DETECTION_ORDER:
        spec = DECODERS.get(key).guess(outputs, num_classes)
        if spec is not None:
            return spec  # type: ignore[return-value]  # every plugin's spec_model is a DecoderSpec member
    classes = f"{num_classes} labels" if num_classes is not None else "unknown class count"
    raise DecoderError(
        f"cannot tell how to decode this model's outputs ({classes}):\n{describe(outputs)}\n{_FORMATS}\n"
        "Write a model.json beside the model with the right decoder.type (and labels)."
    )
