"""Build two TFLite detectors with the same weights (convert venv, TensorFlow): one with a dynamic input
signature ``[-1, -1, -1, 3]``, one fixed at 96x128. Usage: ``dynamic_tflite.py --out DIR``.

The head is YOLOv8-shaped: a stride-8 convolution to 4+C channels, reshaped to ``[N, 4+C, H/8 * W/8]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf

CLASSES = 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = Path(parser.parse_args().out)
    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(0, 0.05, (8, 8, 3, 4 + CLASSES)).astype(np.float32))
    bias = tf.constant(np.array([40.0, 40.0, 20.0, 20.0] + [0.0] * CLASSES, np.float32))

    def head(images: tf.Tensor) -> tf.Tensor:
        conv = tf.nn.conv2d(images, kernel, strides=8, padding="VALID") + bias
        rows = tf.reshape(conv, [tf.shape(conv)[0], -1, 4 + CLASSES])
        return tf.transpose(rows, [0, 2, 1])

    for name, spec in (("dynamic", [None, None, None, 3]), ("static", [1, 96, 128, 3])):
        fn = tf.function(head, input_signature=[tf.TensorSpec(spec, tf.float32, name="images")])
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
        (out / f"{name}.tflite").write_bytes(converter.convert())
    print("built", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
