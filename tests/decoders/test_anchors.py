import math

import numpy as np
import pytest

from agent.decoders import build_decoder
from agent.decoders.anchors import generate_anchors
from agent.decoders.base import TensorInfo
from agent.errors import DecoderError
from agent.manifest import AnchorsDecoder, Thresholds

from .helpers import float_info, quant_info, quantize

# MediaPipe face_detection_short_range: 128x128 input, strides 8, 16, 16, 16.
BLAZEFACE = AnchorsDecoder(num_layers=4, strides=(8, 16, 16, 16))
TH = Thresholds(score=0.5, iou=0.3, max_detections=100)


def test_blazeface_anchor_count_and_positions():
    anchors, _ = generate_anchors(BLAZEFACE, 128, 128)
    assert anchors.shape == (896, 4)  # 16*16*2 + 8*8*6
    # Row-major cells, anchors of one cell adjacent; fixed size means w = h = 1.
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16, 1.0, 1.0])
    np.testing.assert_allclose(anchors[1], [0.5 / 16, 0.5 / 16, 1.0, 1.0])
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16, 1.0, 1.0])
    np.testing.assert_allclose(anchors[32], [0.5 / 16, 1.5 / 16, 1.0, 1.0])  # second row
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8, 1.0, 1.0])  # first stride-16 cell
    np.testing.assert_allclose(anchors[518], [1.5 / 8, 0.5 / 8, 1.0, 1.0])  # 6 anchors per stride-16 cell


def test_default_options_count():
    anchors, notes = generate_anchors(AnchorsDecoder(), 128, 128)
    # stride 8: 16x16x2, stride 16: 8x8x2, strides 32+32 merged: 4x4x4.
    assert len(anchors) == 512 + 128 + 64
    assert len(notes) == 3


def test_anchor_sizes_scales_aspect_ratios_and_ceil():
    spec = AnchorsDecoder(
        num_layers=2, strides=(16, 32), min_scale=0.2, max_scale=0.8, aspect_ratios=(1.0, 2.0),
        interpolated_scale_aspect_ratio=1.0, fixed_anchor_size=False, anchor_offset_x=0.0, anchor_offset_y=0.5,
    )
    anchors, _ = generate_anchors(spec, 100, 60)  # ceil(100/16)=7, ceil(60/16)=4; ceil(100/32)=4, ceil(60/32)=2
    assert len(anchors) == 7 * 4 * 3 + 4 * 2 * 3
    s0, s1 = 0.2, 0.8
    r2 = math.sqrt(2.0)
    np.testing.assert_allclose(anchors[0], [0.0, 0.5 / 4, s0, s0], rtol=1e-6)
    np.testing.assert_allclose(anchors[1], [0.0, 0.5 / 4, s0 * r2, s0 / r2], rtol=1e-6)  # w = s*sqrt(ar)
    np.testing.assert_allclose(anchors[2], [0.0, 0.5 / 4, math.sqrt(s0 * s1), math.sqrt(s0 * s1)], rtol=1e-6)
    np.testing.assert_allclose(anchors[3], [1 / 7, 0.5 / 4, s0, s0], rtol=1e-6)
    last_layer = anchors[84:]
    # The last layer interpolates towards scale 1.0.
    np.testing.assert_allclose(last_layer[2, 2:], [math.sqrt(s1), math.sqrt(s1)], rtol=1e-6)


def test_reduce_boxes_in_lowest_layer():
    spec = AnchorsDecoder(
        num_layers=2, strides=(16, 32), fixed_anchor_size=False, reduce_boxes_in_lowest_layer=True,
        min_scale=0.2, max_scale=0.8,
    )
    anchors, _ = generate_anchors(spec, 64, 64)
    assert len(anchors) == 4 * 4 * 3 + 2 * 2 * 2
    r2 = math.sqrt(2.0)
    np.testing.assert_allclose(anchors[:3, 2:], [[0.1, 0.1], [0.2 * r2, 0.2 / r2], [0.2 / r2, 0.2 * r2]], rtol=1e-6)


def blazeface_outputs(box_order="xywh"):
    """Regressors [1, 896, 16] and logits [1, 896, 1] with two faces (one a near-duplicate) and one weak one."""
    reg = np.zeros((1, 896, 16))
    logits = np.full((1, 896, 1), -5.0)
    # Anchor 300: layer 0, cell 150 = row 9, column 6 -> centre (6.5/16, 9.5/16) = (0.40625, 0.59375).
    reg[0, 300, :4] = [12.8, -6.4, 32.0, 16.0]  # x, y, w, h in input pixels (scales are 128)
    reg[0, 300, 4:] = 77.0  # keypoints: ignored
    logits[0, 300, 0] = 2.0
    reg[0, 301, :4] = [13.0, -6.0, 32.0, 16.0]  # same cell, near-identical box: merged into anchor 300's (weighted NMS)
    logits[0, 301, 0] = 1.0
    # Anchor 700: stride-16 block, cell (700-512)//6 = 31 = row 3, column 7 -> centre (7.5/8, 3.5/8).
    reg[0, 700, :4] = [0.0, 0.0, 16.0, 32.0]
    logits[0, 700, 0] = 0.5
    logits[0, 10, 0] = -0.5  # sigmoid 0.38: below threshold
    if box_order == "yxhw":
        reg[0, :, :4] = reg[0, :, [1, 0, 3, 2]].T
    return reg, logits


FACE_300 = np.array([0.50625 - 0.125, 0.54375 - 0.0625, 0.50625 + 0.125, 0.54375 + 0.0625])
FACE_301 = FACE_300 + np.array([0.2, 0.4, 0.2, 0.4]) / 128  # regressor 301 moves the centre by (0.2, 0.4) px
W300, W301 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-1.0))
EXPECTED_BOXES = np.array(
    [
        (W300 * FACE_300 + W301 * FACE_301) / (W300 + W301),  # MediaPipe's WEIGHTED NMS: the score-weighted mean
        [0.9375 - 0.0625, 0.4375 - 0.125, 1.0, 0.4375 + 0.125],  # x2 = 1.0 after clipping
    ]
)
EXPECTED_SCORES = [W300, 1 / (1 + math.exp(-0.5))]  # a merged box keeps its best member's score


@pytest.mark.parametrize("box_order", ["xywh", "yxhw"])
def test_decoded_boxes_at_known_anchors(box_order):
    reg, logits = blazeface_outputs(box_order)
    reg, logits = reg.astype(np.float32), logits.astype(np.float32)
    spec = AnchorsDecoder(num_layers=4, strides=(8, 16, 16, 16), box_order=box_order)
    dec = build_decoder(spec, [float_info("regressors", reg), float_info("classificators", logits)], (128, 128), 1, TH)
    result = dec.decode([reg, logits])
    assert result.class_ids.tolist() == [0, 0]
    np.testing.assert_allclose(result.scores, EXPECTED_SCORES, rtol=1e-6)
    np.testing.assert_allclose(result.boxes, EXPECTED_BOXES, atol=1e-6)


def test_quantized_outputs_in_either_order_match_float():
    reg, logits = blazeface_outputs()
    qreg = quantize(reg, 0.5, 0, np.int8)
    qlog = quantize(logits, 0.1, 10, np.int8)
    infos = [quant_info("Identity_1", qlog, 0.1, 10), quant_info("Identity", qreg, 0.5, 0)]  # names say nothing
    dec = build_decoder(BLAZEFACE, infos, (128, 128), 1, TH)
    result = dec.decode([qlog, qreg])
    assert result.class_ids.tolist() == [0, 0]
    np.testing.assert_allclose(result.scores, EXPECTED_SCORES, atol=0.05 * 0.25)  # half a logit step, slope <= 1/4
    np.testing.assert_allclose(result.boxes, EXPECTED_BOXES, atol=0.25 / 128)  # half a step of 0.5 px
    # The threshold moves into the logit and integer domain: 0.75 is logit 1.0986 -> only the 2.0 face.
    dec.set_thresholds(Thresholds(score=0.75, iou=0.3))
    assert dec.decode([qlog, qreg]).scores.size == 1


def test_multi_class_scores():
    reg = np.zeros((1, 896, 4), np.float32)
    scores = np.full((1, 896, 3), -6.0, np.float32)
    scores[0, 300] = [-1.0, 3.0, 1.0]
    scores[0, 600] = [2.0, -2.0, 0.0]
    dec = build_decoder(BLAZEFACE, [float_info("boxes", reg), float_info("scores", scores)], (128, 128), 3, TH)
    result = dec.decode([reg, scores])
    assert result.class_ids.tolist() == [1, 0]
    np.testing.assert_allclose(result.scores, [1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(-2.0))], rtol=1e-6)


def test_anchor_count_mismatch_explains():
    infos = [
        TensorInfo("regressors", (1, 900, 16), np.dtype(np.float32)),
        TensorInfo("classificators", (1, 900, 1), np.dtype(np.float32)),
    ]
    with pytest.raises(DecoderError) as exc:
        build_decoder(BLAZEFACE, infos, (128, 128), 1, TH)
    msg = str(exc.value)
    assert "'regressors'" in msg and "[1, 900, 16]" in msg and "generates 896" in msg
    assert "stride 8: 16x16 cells x 2 anchors = 512" in msg and "strides" in msg


def test_score_width_must_fit_the_labels():
    infos = [TensorInfo("a", (1, 896, 16), np.dtype(np.float32)), TensorInfo("b", (1, 896, 5), np.dtype(np.float32))]
    with pytest.raises(DecoderError, match=r"(?s)C=3.*'b': shape \[1, 896, 5\]"):
        build_decoder(BLAZEFACE, infos, (128, 128), 3, TH)


def test_weighted_nms_merges_overlaps_and_keeps_the_rest():
    """MediaPipe's WEIGHTED suppression: members above the IoU threshold are averaged by score, others stay."""
    from agent.decoders.anchors import weighted_nms

    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.2, 0.1, 0.4, 0.3], [0.6, 0.6, 0.8, 0.8]], np.float32)
    scores = np.array([0.9, 0.6, 0.5, 0.7], np.float32)
    out = weighted_nms(boxes, scores, np.zeros(4, np.int64), Thresholds(score=0.5, iou=0.3, max_detections=10))
    # IoU(0, 1) = 0.818 merges; IoU(0, 2) = 0.333 merges too (> 0.3); box 3 does not overlap
    expected = (0.9 * boxes[0] + 0.6 * boxes[1] + 0.5 * boxes[2]) / 2.0
    np.testing.assert_allclose(out.boxes, [expected, boxes[3]], atol=1e-6)
    np.testing.assert_allclose(out.scores, [0.9, 0.7])
    stricter = weighted_nms(boxes, scores, np.zeros(4, np.int64), Thresholds(score=0.5, iou=0.5, max_detections=10))
    assert stricter.scores.tolist() == pytest.approx([0.9, 0.7, 0.5])  # box 2 (IoU 0.333) now stands alone
    per_class = weighted_nms(boxes, scores, np.array([0, 1, 0, 0]), Thresholds(score=0.5, iou=0.3, max_detections=2))
    assert per_class.class_ids.tolist() == [0, 0] and per_class.scores.tolist() == pytest.approx([0.9, 0.7])  # capped at 2
