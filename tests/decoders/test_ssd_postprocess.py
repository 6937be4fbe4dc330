import itertools

import numpy as np
import pytest

from agent.decoders import build_decoder
from agent.decoders.base import TensorInfo
from agent.errors import DecoderError
from agent.manifest import SSDPostprocessDecoder, Thresholds

from .helpers import float_info, quant_info, quantize

TH = Thresholds(score=0.5, iou=0.45, max_detections=100)
N = 10
# First `count` rows are real; later rows hold stale values the op leaves behind and must be ignored.
COUNT = 4
BOXES_YXYX = np.zeros((1, N, 4))
BOXES_YXYX[0, :5] = [
    [0.10, 0.20, 0.50, 0.60],  # ymin, xmin, ymax, xmax
    [0.30, 0.05, 0.90, 0.45],
    [0.00, 0.00, 0.20, 0.20],
    [0.55, 0.60, 1.05, 0.95],  # ymax beyond 1: clipped
    [0.40, 0.40, 0.60, 0.60],  # beyond count
]
CLASSES = np.zeros((1, N))
CLASSES[0, :5] = [17, 0, 3, 2, 5]
SCORES = np.zeros((1, N))
SCORES[0, :5] = [0.62, 0.91, 0.30, 0.75, 0.99]
# Expected (label_offset 0): sorted by score, x1, y1, x2, y2.
EXPECTED_BOXES = np.array([[0.05, 0.30, 0.45, 0.90], [0.60, 0.55, 0.95, 1.0], [0.20, 0.10, 0.60, 0.50]])
EXPECTED_SCORES = [0.91, 0.75, 0.62]
EXPECTED_CLASSES = [0, 2, 17]

TF1_NAMES = {
    "boxes": "TFLite_Detection_PostProcess",
    "classes": "TFLite_Detection_PostProcess:1",
    "scores": "TFLite_Detection_PostProcess:2",
    "count": "TFLite_Detection_PostProcess:3",
}
KEYWORD_NAMES = {
    "boxes": "detection_boxes",
    "classes": "detection_classes",
    "scores": "detection_scores",
    "count": "num_detections",
}
# TF2 / Model Maker exports: the numbers say nothing reliable (this is one observed assignment).
TF2_NAMES = {
    "boxes": "StatefulPartitionedCall:3",
    "classes": "StatefulPartitionedCall:2",
    "scores": "StatefulPartitionedCall:1",
    "count": "StatefulPartitionedCall:0",
}


def tensors(order, names, quantized=False):
    real = {"boxes": BOXES_YXYX, "classes": CLASSES, "scores": SCORES, "count": np.array([COUNT])}
    arrays, infos = [], []
    for role in order:
        if quantized and role != "count":
            scale, zp = (1.0, 0) if role == "classes" else (1 / 255, 0)
            arr = quantize(real[role], scale, zp, np.uint8)
            info = quant_info(names[role], arr, scale, zp)
        else:
            arr = real[role].astype(np.float32)
            info = float_info(names[role], arr)
        arrays.append(arr)
        infos.append(info)
    return arrays, infos


def check(result, atol=1e-6, offset=0):
    assert result.class_ids.tolist() == [c + offset for c in EXPECTED_CLASSES]
    np.testing.assert_allclose(result.scores, EXPECTED_SCORES, atol=atol)
    np.testing.assert_allclose(result.boxes, EXPECTED_BOXES, atol=atol)


ROLES = ("boxes", "classes", "scores", "count")


@pytest.mark.parametrize("order", list(itertools.permutations(ROLES)))
@pytest.mark.parametrize("names", [TF1_NAMES, KEYWORD_NAMES, TF2_NAMES], ids=["tf1", "keywords", "tf2"])
def test_any_output_order_and_naming(order, names):
    arrays, infos = tensors(order, names)
    dec = build_decoder(SSDPostprocessDecoder(), infos, (300, 300), 91, TH)
    check(dec.decode(arrays))


@pytest.mark.parametrize("order", [("scores", "boxes", "count", "classes"), ("boxes", "classes", "scores", "count")])
def test_quantized_outputs_match_float(order):
    arrays, infos = tensors(order, TF2_NAMES, quantized=True)
    dec = build_decoder(SSDPostprocessDecoder(), infos, (300, 300), 91, TH)
    check(dec.decode(arrays), atol=0.51 / 255)


def test_value_disambiguation_is_decided_once_and_remembered():
    # Scores come before classes and names say nothing: the first frame's values decide.
    order = ("scores", "boxes", "count", "classes")
    arrays, infos = tensors(order, TF2_NAMES)
    dec = build_decoder(SSDPostprocessDecoder(), infos, (300, 300), 91, TH)
    check(dec.decode(arrays))
    # Second frame: two detections whose scores are exactly 1.0 and classes 0/1. On their own these
    # values fit either assignment; the remembered one must still be used.
    scores = np.zeros((1, N), np.float32)
    scores[0, :2] = [1.0, 1.0]
    classes = np.zeros((1, N), np.float32)
    classes[0, :2] = [1.0, 0.0]
    result = dec.decode([scores, arrays[1], np.array([2.0], np.float32), classes])
    assert result.class_ids.tolist() == [1, 0]
    assert result.scores.tolist() == [1.0, 1.0]


def test_label_offset_threshold_and_cap():
    arrays, infos = tensors(ROLES, KEYWORD_NAMES)
    dec = build_decoder(SSDPostprocessDecoder(label_offset=1), infos, (300, 300), 91, TH)
    check(dec.decode(arrays), offset=1)
    dec.set_thresholds(Thresholds(score=0.7, iou=0.45, max_detections=100))
    assert dec.decode(arrays).class_ids.tolist() == [1, 3]
    dec.set_thresholds(Thresholds(score=0.1, iou=0.45, max_detections=2))
    result = dec.decode(arrays)
    assert result.class_ids.tolist() == [1, 3]
    np.testing.assert_allclose(result.scores, [0.91, 0.75], atol=1e-6)


def test_zero_count_gives_nothing():
    arrays, infos = tensors(ROLES, KEYWORD_NAMES)
    arrays[3] = np.array([0.0], np.float32)
    dec = build_decoder(SSDPostprocessDecoder(), infos, (300, 300), 91, TH)
    result = dec.decode(arrays)
    assert result.boxes.shape == (0, 4) and result.scores.size == 0


def test_wrong_shapes_are_named():
    infos = [
        TensorInfo("StatefulPartitionedCall:0", (1, 10, 4), np.dtype(np.float32)),
        TensorInfo("StatefulPartitionedCall:1", (1, 10), np.dtype(np.float32)),
        TensorInfo("StatefulPartitionedCall:2", (1, 12), np.dtype(np.float32)),
        TensorInfo("StatefulPartitionedCall:3", (1,), np.dtype(np.float32)),
    ]
    with pytest.raises(DecoderError) as exc:
        build_decoder(SSDPostprocessDecoder(), infos, (300, 300), 91, TH)
    msg = str(exc.value)
    assert "'StatefulPartitionedCall:2': shape [1, 12]" in msg and "[1, N, 4]" in msg and "decoder.type" in msg


def test_wrong_output_count_is_named():
    infos = [
        TensorInfo("raw_boxes", (1, 1917, 4), np.dtype(np.float32)),
        TensorInfo("scores", (1, 1917, 91), np.dtype(np.float32)),
    ]
    with pytest.raises(DecoderError, match=r"(?s)expects 4 output.*'raw_boxes': shape \[1, 1917, 4\]"):
        build_decoder(SSDPostprocessDecoder(), infos, (300, 300), 91, TH)
