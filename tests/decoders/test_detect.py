import numpy as np
import pytest

from agent.decoders import DECODERS, DETECTION_ORDER, build_decoder, detect_decoder
from agent.decoders.base import TensorInfo
from agent.errors import DecoderError
from agent.manifest import AnchorsDecoder, Thresholds

F32 = np.dtype(np.float32)


def outs(*shapes, names=None):
    names = names or [f"out{i}" for i in range(len(shapes))]
    return [TensorInfo(n, tuple(s), F32) for n, s in zip(names, shapes, strict=True)]


def test_registry_has_every_format_in_the_detection_order():
    assert sorted(DECODERS.keys()) == sorted(DETECTION_ORDER)


@pytest.mark.parametrize(
    ("shapes", "num_classes", "expected"),
    [
        # TFLite_Detection_PostProcess, TF2 order: scores, boxes, count, classes.
        ([(1, 25), (1, 25, 4), (1,), (1, 25)], None, "ssd_postprocess"),
        ([(1, 10, 4), (1, 10), (1, 10), (1,)], 90, "ssd_postprocess"),
        ([(1, 896, 16), (1, 896, 1)], None, "ssd_anchors"),
        ([(1, 896, 1), (1, 896, 16)], 1, "ssd_anchors"),
        ([(1, 1001)], None, "classifier"),
        ([(1, 1000)], 1000, "classifier"),
        ([(1, 300, 6)], None, "end2end"),
        ([(1, 100, 6)], 1, "end2end"),  # few rows: a padded NMS result, not a one-class YOLOv5 head
        ([(1, 84, 8400)], None, "yolov8"),
        ([(1, 84, 8400)], 80, "yolov8"),
        ([(1, 8400, 84)], 80, "yolov8"),  # transposed; the class count tells it from yolov5
        ([(1, 5, 2100)], 1, "yolov8"),
        ([(1, 25200, 85)], None, "yolov5"),
        ([(1, 25200, 85)], 80, "yolov5"),
        ([(1, 6300, 6)], 1, "yolov5"),  # [1, N, 6] with many rows: a one-class YOLOv5 head
        ([(1, 8400, 84)], None, "yolov5"),  # without a class count this orientation reads as yolov5
    ],
)
def test_detects_each_format(shapes, num_classes, expected):
    assert detect_decoder(outs(*shapes), num_classes).type == expected


def test_detected_anchor_preset_builds_and_guessed_yolo_is_pixel_boxes():
    infos = outs((1, 896, 16), (1, 896, 1), names=["regressors", "classificators"])
    spec = detect_decoder(infos, 1)
    assert isinstance(spec, AnchorsDecoder) and spec.strides == (8, 16, 16, 16)
    build_decoder(spec, infos, (128, 128), 1, Thresholds())  # 896 anchors: no error
    full_range = outs((1, 2304, 16), (1, 2304, 1))
    build_decoder(detect_decoder(full_range, 1), full_range, (192, 192), 1, Thresholds())
    assert detect_decoder(outs((1, 84, 8400)), 80).boxes_normalized is False


@pytest.mark.parametrize(
    ("shapes", "num_classes"),
    [
        ([(1, 10, 10, 3)], None),  # a feature map, not a head
        ([(1, 84, 8400)], 3),  # neither 4+3 nor 5+3 channels
        ([(1, 8400, 84)], 3),
        ([(1, 1000)], 10),  # classifier with the wrong label count
        ([(1, 10, 4), (1, 10), (1, 12), (1,)], None),
    ],
)
def test_nothing_matches_lists_outputs_and_formats(shapes, num_classes):
    infos = outs(*shapes)
    with pytest.raises(DecoderError) as exc:
        detect_decoder(infos, num_classes)
    msg = str(exc.value)
    for info in infos:
        assert f"{info.name!r}: shape {list(info.shape)}, float32" in msg
    assert "yolov8" in msg and "ssd_postprocess" in msg and "model.json" in msg


def test_quantized_outputs_are_described_with_scale():
    info = TensorInfo("Identity", (1, 7, 7, 3), np.dtype(np.int8), 0.02, -3)
    with pytest.raises(DecoderError, match=r"'Identity': shape \[1, 7, 7, 3\], int8, quantized scale=0.02 zero_point=-3"):
        detect_decoder([info], None)


def test_unknown_decoder_type_is_a_decoder_error():
    class Fake:
        type = "yolov99"

    with pytest.raises(DecoderError, match=r"unknown decoder\.type 'yolov99'"):
        build_decoder(Fake(), outs((1, 84, 8400)), (640, 640), 80, Thresholds())  # type: ignore[arg-type]
