import numpy as np
import pytest

from agent.decoders import build_decoder
from agent.decoders.base import TensorInfo
from agent.errors import DecoderError
from agent.manifest import End2EndDecoder, Thresholds

from .helpers import float_info, quant_info, quantize

W, H = 320, 240
TH = Thresholds(score=0.5, iou=0.45, max_detections=100)

ROWS = np.zeros((1, 8, 6))
ROWS[0, :6] = [
    [10, 20, 110, 220, 0.60, 3],
    [0, 0, 0, 0, 0.00, 0],  # padding: score 0
    [50, 50, 100, 100, 0.80, -1],  # padding: class -1
    [5, 5, 50, 50, 0.40, 1],  # below threshold
    [200, 100, 330, 200, 0.90, 0],  # x2 beyond the input: clipped
    [10, 20, 110, 220, 0.55, 3],  # duplicate box: NMS already ran in the graph, so it stays
]
EXPECTED_BOXES = np.array(
    [[200 / W, 100 / H, 1.0, 200 / H], [10 / W, 20 / H, 110 / W, 220 / H], [10 / W, 20 / H, 110 / W, 220 / H]]
)


def test_rows_are_thresholded_sorted_and_padding_dropped():
    real = ROWS.astype(np.float32)
    dec = build_decoder(End2EndDecoder(), [float_info("output0", real)], (W, H), 4, TH)
    result = dec.decode([real])
    assert result.class_ids.tolist() == [0, 3, 3]
    np.testing.assert_allclose(result.scores, [0.9, 0.6, 0.55], atol=1e-6)
    np.testing.assert_allclose(result.boxes, EXPECTED_BOXES, atol=1e-6)


def test_threshold_zero_still_drops_padding_rows():
    real = ROWS.astype(np.float32)
    dec = build_decoder(End2EndDecoder(), [float_info("output0", real)], (W, H), 4, Thresholds(score=0.0))
    assert dec.decode([real]).class_ids.tolist() == [0, 3, 3, 1]


def test_quantized_with_normalized_boxes_matches_float():
    real = ROWS.copy()
    real[0, :, [0, 2]] /= W
    real[0, :, [1, 3]] /= H
    scale, zp = 1 / 32, 0  # one scale for coordinates, scores and class ids (-4..3.97)
    arr = quantize(real, scale, zp, np.int8)
    dec = build_decoder(End2EndDecoder(boxes_normalized=True), [quant_info("o", arr, scale, zp)], (W, H), 4, TH)
    result = dec.decode([arr])
    assert result.class_ids.tolist() == [0, 3, 3]
    np.testing.assert_allclose(result.scores, [0.9, 0.6, 0.55], atol=0.51 * scale)
    np.testing.assert_allclose(result.boxes, EXPECTED_BOXES, atol=0.51 * scale)
    dec.set_thresholds(Thresholds(score=0.0))
    assert dec.decode([arr]).class_ids.tolist() == [0, 3, 3, 1]


def test_max_detections_cap():
    real = ROWS.astype(np.float32)
    dec = build_decoder(End2EndDecoder(), [float_info("o", real)], (W, H), 4, Thresholds(score=0.5, max_detections=1))
    assert dec.decode([real]).class_ids.tolist() == [0]


def test_wrong_shape_is_named():
    with pytest.raises(DecoderError) as exc:
        build_decoder(End2EndDecoder(), [TensorInfo("dets", (1, 100, 7), np.dtype(np.float32))], (W, H), 4, TH)
    assert "'dets' has shape [1, 100, 7], expected [1, N, 6]" in str(exc.value)
