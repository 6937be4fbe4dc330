"""Fixture builder, step 1 (converter venv, TensorFlow): a small ImageNet-shaped classifier as TFLite, no metadata yet.

Writes ``float.tflite`` (float32 in and out) and ``uint8.tflite`` (full-integer, uint8 in and out, converted with a
representative data set in the [-1, 1] input convention) plus the scene images the reference and the agent both
classify. Weights are random but calibrated on those scenes, so that each image gets a confident, image-dependent
top-5 (a 1000-way softmax of raw random logits would be flat, and any ranking would "match").

Usage: python build_classifier.py --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from agent.sources.scenes import random_scene

SIZE = 160  # model input (square), pixels
CLASSES = 1000
SEED = 13


def scenes(count: int, seed: int, width: int = SIZE, height: int = SIZE) -> list[np.ndarray]:
    """RGB scenes (by default at the model's input size) from the synthetic source's generator."""
    rng = np.random.default_rng(seed)
    return [cv2.cvtColor(random_scene(rng, width, height)[0], cv2.COLOR_BGR2RGB) for _ in range(count)]


def normalized(rgb: list[np.ndarray]) -> np.ndarray:
    """The model's input convention: (pixel - 127.5) / 127.5, what the metadata will declare."""
    return (np.stack(rgb).astype(np.float32) - 127.5) / 127.5


def build_model(calibration: np.ndarray) -> tf.keras.Model:
    """Random convolutions, the last one linear and whitened on ``calibration``, then a head scaled to a peaky softmax.

    Whitening folds into the last convolution (it commutes with the average pooling): the pooled features then
    span a few units, not a sliver of their range, and survive uint8 quantization.
    """
    tf.keras.utils.set_random_seed(SEED)
    inp = tf.keras.Input((SIZE, SIZE, 3), name="image")
    x = inp
    for filters in (16, 32):
        x = tf.keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    last = tf.keras.layers.Conv2D(64, 3, strides=2, padding="same")
    features = tf.keras.layers.GlobalAveragePooling2D()(last(x))
    feats = tf.keras.Model(inp, features)(calibration).numpy()
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    kernel, bias = last.get_weights()
    last.set_weights([kernel / std, (bias - mean) / std])
    head = tf.keras.layers.Dense(CLASSES, name="logits")
    model = tf.keras.Model(inp, tf.keras.layers.Softmax(name="probabilities")(head(features)))
    white = (feats - mean) / std
    direction = np.random.default_rng(SEED).normal(size=(feats.shape[1], CLASSES)).astype(np.float32)
    direction /= np.sqrt(feats.shape[1])

    def top1(scale: float) -> float:
        z = white @ (direction * scale)
        e = np.exp(z - z.max(1, keepdims=True))
        return float((e.max(1) / e.sum(1)).mean())

    lo, hi = 0.1, 50.0
    for _ in range(40):  # bisect the logit scale until the average top-1 probability is about 0.4
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if top1(mid) < 0.4 else (lo, mid)
    head.set_weights([direction * lo, np.zeros(CLASSES, np.float32)])
    return model


def convert(model: tf.keras.Model, representative: np.ndarray | None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[None]] for sample in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    # images/ at the model's size (no resampling question); resized/ at 320x240, which each side resizes its own way
    test = [(f"scene_{i:02d}.png", img) for i, img in enumerate(scenes(8, 1))]
    for name, rgb in test:
        cv2.imwrite(str(images / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (out / "resized").mkdir(exist_ok=True)
    for i, rgb in enumerate(scenes(3, 2, 320, 240)):
        cv2.imwrite(str(out / "resized" / f"wide_{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    calibration = normalized(scenes(64, 3) + [rgb for _, rgb in test])
    model = build_model(calibration)
    (out / "float.tflite").write_bytes(convert(model, None))
    (out / "uint8.tflite").write_bytes(convert(model, calibration))
    probs = model.predict(normalized([rgb for _, rgb in test]), verbose=0)
    top = np.sort(probs, 1)[:, ::-1][:, :5]
    print("top-5 probabilities per test image (Keras):\n" + "\n".join(" ".join(f"{p:.3f}" for p in row) for row in top))


if __name__ == "__main__":
    main()
