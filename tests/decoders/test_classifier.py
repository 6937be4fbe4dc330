import numpy as np
import pytest

from agent.decoders import build_decoder
from agent.decoders.base import TensorInfo
from agent.errors import DecoderError
from agent.manifest import ClassifierDecoder, Thresholds

from .helpers import as_variant, float_info

TH = Thresholds(score=0.5, iou=0.45, max_detections=100)
PROBS = np.array([[0.10, 0.60, 0.05, 0.90, 0.70, 0.20]])


@pytest.mark.parametrize("variant", ["float32", "int8", "uint8"])
def test_top_k_above_threshold(variant):
    arr, info = as_variant(PROBS, "probs", variant)
    dec = build_decoder(ClassifierDecoder(top_k=3), [info], (224, 224), 6, TH)
    result = dec.decode([arr])
    assert result.boxes is None
    assert result.class_ids.tolist() == [3, 4, 1]
    np.testing.assert_allclose(result.scores, [0.9, 0.7, 0.6], atol=0.51 / 255)
    dec.set_thresholds(Thresholds(score=0.65))
    assert dec.decode([arr]).class_ids.tolist() == [3, 4]
    dec.set_thresholds(Thresholds(score=0.0, max_detections=2))
    assert dec.decode([arr]).class_ids.tolist() == [3, 4]


def test_softmax_of_logits():
    logits = np.array([[1.0, 3.0, 0.0, 2.0, -1.0]], dtype=np.float32)
    spec = ClassifierDecoder(apply_softmax=True, top_k=2)
    dec = build_decoder(spec, [float_info("logits", logits)], (224, 224), 5, Thresholds(score=0.2))
    result = dec.decode([logits])
    e = np.exp([1.0, 3.0, 0.0, 2.0, -1.0])
    assert result.class_ids.tolist() == [1, 3]
    np.testing.assert_allclose(result.scores, [e[1] / e.sum(), e[3] / e.sum()], rtol=1e-6)
    # 0.2 keeps class 1 (0.64) and class 3 (0.24); 0.3 keeps only class 1.
    dec.set_thresholds(Thresholds(score=0.3))
    assert dec.decode([logits]).class_ids.tolist() == [1]


def test_softmax_quantized_logits():
    logits = np.array([[1.0, 3.0, 0.0, 2.0, -1.0]])
    scale, zp = 0.05, 0
    arr = np.round(logits / scale).astype(np.int8)
    info = TensorInfo("logits", arr.shape, np.dtype(np.int8), scale, zp)
    dec = build_decoder(ClassifierDecoder(apply_softmax=True, top_k=5), [info], (224, 224), 5, Thresholds(score=0.0))
    e = np.exp(logits[0])
    result = dec.decode([arr])
    assert result.class_ids.tolist() == [1, 3, 0, 2, 4]
    np.testing.assert_allclose(result.scores, np.sort(e / e.sum())[::-1], rtol=1e-5)


def test_class_count_mismatch_is_named():
    with pytest.raises(DecoderError) as exc:
        build_decoder(ClassifierDecoder(), [TensorInfo("probs", (1, 1001), np.dtype(np.uint8), 1 / 256, 0)], (224, 224), 1000, TH)
    msg = str(exc.value)
    assert "'probs'" in msg and "[1, 1001]" in msg and "1000" in msg and "background" in msg


def test_not_a_vector_is_named():
    with pytest.raises(DecoderError, match=r"'feat' has shape \[1, 7, 7, 1280\], expected \[1, C\]"):
        build_decoder(ClassifierDecoder(), [TensorInfo("feat", (1, 7, 7, 1280), np.dtype(np.float32))], (224, 224), 1280, TH)
