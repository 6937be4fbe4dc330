"""Fixture builder (runs in the converter venv, TF 2.21): an SSD ending in TFLite_Detection_PostProcess, and its answers.

The model is built the way TF's Object Detection API exports SSDs for TFLite: a small conv net (random
weights, fixed seed) with a box-encoding head and a sigmoid class head over a grid of anchors; the anchors
are a constant; the post-processing is a placeholder ``tf.function`` declared with
``experimental_implements="TFLite_Detection_PostProcess"`` and the op's attributes, which TF's own TFLite
converter fuses into the real op. Two variants: float (expects [-1, 1], MobileNet-SSD's convention) and
full-integer uint8 and int8 (input quantized from a representative set of scenes; the op itself stays float).

Reference: LiteRT runs each .tflite on the same images and the op's own outputs (boxes ymin, xmin, ymax,
xmax in 0..1, classes, scores, count) are mapped to frame pixels by the SSD convention: the frame is
stretched to the input size (bilinear), so x = xmin * frame_width; boxes are clipped to the frame.

Writes ``--out``: ``float.tflite``, ``uint8.tflite``, ``int8.tflite``, ``images/*.png``, ``reference.json``
(``{"threshold", "models": {"float": {"images": ...}, "uint8": {...}, "int8": {...}}}``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from agent.sources.scenes import random_scene

SIZE = 192  # square input, as SSD exports have (fixed_shape_resizer)
NUM_CLASSES = 4  # + a background column in the class head, which the op skips
ANCHORS_PER_CELL = 3
SCALES = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w box-coder scales (the OD API's defaults)
NMS_SCORE, NMS_IOU, MAX_DETECTIONS = 0.3, 0.5, 20
THRESHOLD = 0.5  # the agent's default score threshold; the reference keeps the op's boxes above it
FRAMES = {
    "scene_wide": (320, 240),
    "scene_tall": (240, 320),
    "scene_hd": (640, 360),
    "scene_square": (300, 300),
    "scene_vga": (640, 480),
    "scene_pano": (800, 200),
}


def make_anchors() -> np.ndarray:
    """(A, 4) ycenter, xcenter, h, w in 0..1: three aspect ratios per cell on the stride-16 and stride-32 grids."""
    rows = []
    for stride, scale in ((16, 0.2), (32, 0.45)):
        cells = SIZE // stride
        for i in range(cells):
            for j in range(cells):
                for ratio in (1.0, 2.0, 0.5):
                    rows.append(((i + 0.5) / cells, (j + 0.5) / cells, scale / np.sqrt(ratio), scale * np.sqrt(ratio)))
    return np.asarray(rows, np.float32)


def implements_signature() -> str:
    """The NameAttrList text the converter reads off the placeholder function (the OD API's attribute set)."""
    attrs = {
        "max_detections": ("i", MAX_DETECTIONS),
        "max_classes_per_detection": ("i", 1),
        "detections_per_class": ("i", 100),
        "num_classes": ("i", NUM_CLASSES),
        "use_regular_nms": ("b", "false"),
        "nms_score_threshold": ("f", NMS_SCORE),
        "nms_iou_threshold": ("f", NMS_IOU),
        "y_scale": ("f", SCALES[0]),
        "x_scale": ("f", SCALES[1]),
        "h_scale": ("f", SCALES[2]),
        "w_scale": ("f", SCALES[3]),
    }
    parts = ['name: "TFLite_Detection_PostProcess"']
    parts += [f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}' for key, (kind, value) in attrs.items()]
    return " ".join(parts)


class SSD(tf.Module):
    """Backbone to stride 32, two prediction maps; heads give box encodings and per-class sigmoid scores."""

    def __init__(self, anchors: np.ndarray) -> None:
        super().__init__()
        rng = np.random.default_rng(7)

        def conv(cin: int, cout: int, gain: float = 1.0) -> tf.Variable:
            return tf.Variable(rng.normal(0, gain * np.sqrt(2.0 / (9 * cin)), (3, 3, cin, cout)).astype(np.float32))

        self.backbone = [conv(3, 16), conv(16, 24), conv(24, 32), conv(32, 48), conv(48, 64)]
        k = ANCHORS_PER_CELL
        self.box_heads = [conv(48, k * 4, 0.3), conv(64, k * 4, 0.3)]
        self.cls_heads = [conv(48, k * (NUM_CLASSES + 1), 1.5), conv(64, k * (NUM_CLASSES + 1), 1.5)]
        self.cls_bias = tf.constant(-2.2)  # most anchors score low, a few clear the thresholds
        self.anchors = tf.constant(anchors)
        self.postprocess = tf.function(self._placeholder_postprocess, experimental_implements=implements_signature())

    @staticmethod
    def _placeholder_postprocess(box_encodings: tf.Tensor, class_predictions: tf.Tensor, anchors: tf.Tensor) -> tuple:
        # The converter replaces this body with the TFLite op; TF itself never needs real values here.
        del box_encodings, class_predictions, anchors
        zero = tf.constant(0.0, tf.float32)
        return zero, zero, zero, zero

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="normalized_input_image_tensor")])
    def __call__(self, image: tf.Tensor) -> tuple:
        x, maps = image, []
        for index, kernel in enumerate(self.backbone):
            x = tf.nn.relu6(tf.nn.conv2d(x, kernel, strides=2, padding="SAME"))
            if index >= 3:  # stride 16 and stride 32
                maps.append(x)
        boxes = [tf.reshape(tf.nn.conv2d(m, h, 1, "SAME"), [1, -1, 4]) for m, h in zip(maps, self.box_heads, strict=True)]
        logits = [
            tf.reshape(tf.nn.conv2d(m, h, 1, "SAME"), [1, -1, NUM_CLASSES + 1]) for m, h in zip(maps, self.cls_heads, strict=True)
        ]
        scores = tf.sigmoid(tf.concat(logits, axis=1) + self.cls_bias)
        return self.postprocess(tf.concat(boxes, axis=1), scores, self.anchors)


def to_input(bgr: np.ndarray) -> np.ndarray:
    """SSD preprocessing: RGB, stretched to the input size (bilinear), uint8 HWC."""
    return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def convert(saved: Path, kind: str, calibration: list[np.ndarray]) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.allow_custom_ops = True  # the fused op is a custom op LiteRT's builtin resolver registers
    if kind != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([(img[None].astype(np.float32) / 127.5 - 1.0)] for img in calibration)
        # the post-process op has no integer kernel: builtins stay allowed beside the int8 ones
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.inference_input_type = tf.uint8 if kind == "uint8" else tf.int8
    return converter.convert()


def run(model: Path, images: dict[str, np.ndarray]) -> dict[str, dict[str, list[dict[str, object]]]]:
    """The op's own outputs on each image, in frame pixels (stretch: normalized * frame size)."""
    interpreter = Interpreter(str(model), num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    op = [d for d in interpreter._get_ops_details() if d["op_name"] == "TFLite_Detection_PostProcess"]
    assert len(op) == 1, f"{model.name}: no TFLite_Detection_PostProcess op in the converted model"
    boxes_i, classes_i, scores_i, count_i = op[0]["outputs"]  # the op's documented output order
    by_index = {d["index"] for d in outputs}
    assert {boxes_i, classes_i, scores_i, count_i} == by_index, "the op's outputs are not the model's outputs"
    answers = {}
    for name, bgr in images.items():
        rgb = to_input(bgr)
        if inp["dtype"] == np.uint8:  # quantized SSDs take the pixels as they are (the input scale maps 0..255 onto [-1, 1])
            tensor = rgb[None]
        elif inp["dtype"] == np.int8:  # the same pixels shifted into int8 (-128..127), as int8-input models take them
            tensor = (rgb[None].astype(np.int16) - 128).astype(np.int8)
        else:
            tensor = (rgb[None].astype(np.float32) / 127.5 - 1.0).astype(np.float32)
        interpreter.set_tensor(inp["index"], tensor)
        interpreter.invoke()
        count = int(interpreter.get_tensor(count_i).reshape(-1)[0])
        yxyx = interpreter.get_tensor(boxes_i)[0][:count]
        classes = interpreter.get_tensor(classes_i)[0][:count]
        scores = interpreter.get_tensor(scores_i)[0][:count]
        height, width = bgr.shape[:2]
        rows = []
        for (y1, x1, y2, x2), cls, score in zip(np.clip(yxyx, 0.0, 1.0), classes, scores, strict=True):
            if score >= THRESHOLD:  # what a user of the op keeps at this threshold
                rows.append(
                    {
                        "box": [float(x1 * width), float(y1 * height), float(x2 * width), float(y2 * height)],
                        "class_id": int(cls),
                        "score": float(score),
                    }
                )
        answers[f"{name}.png"] = {"detections": rows, "op_count": count}
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    rng = np.random.default_rng(11)
    images = {name: random_scene(rng, w, h, max_objects=4)[0] for name, (w, h) in FRAMES.items()}
    (out / "images").mkdir(parents=True, exist_ok=True)
    for name, bgr in images.items():
        cv2.imwrite(str(out / "images" / f"{name}.png"), bgr)
    calibration = [to_input(random_scene(rng, 320, 240, max_objects=4)[0]) for _ in range(32)]
    tf.random.set_seed(0)
    module = SSD(make_anchors())
    saved = out / "saved_model"
    tf.saved_model.save(module, str(saved), signatures=module.__call__.get_concrete_function())
    reference: dict[str, object] = {"threshold": THRESHOLD, "tensorflow": tf.__version__, "models": {}}
    for kind in ("float", "uint8", "int8"):
        path = out / f"{kind}.tflite"
        path.write_bytes(convert(saved, kind, calibration))
        answers = run(path, {name: cv2.imread(str(out / "images" / f"{name}.png")) for name in images})
        reference["models"][kind] = {"images": answers}  # type: ignore[index]
        print(kind, {k: [round(d["score"], 3) for d in v["detections"]] for k, v in answers.items()})
    (out / "reference.json").write_text(json.dumps(reference, indent=1))


if __name__ == "__main__":
    main()
