"""Fixture builder, step 2 (tflite-support venv): TFLite Metadata written by tflite-support's own writer, and answers.

For each model of step 1 (``float.tflite``, ``uint8.tflite``) it writes ``<kind>_metadata.tflite`` with
``metadata_writers.image_classifier`` (normalization mean/std 127.5, a 1000-line labels file packed into the
model), the writer's own JSON rendering of that metadata (``<kind>_writer_metadata.json``, what the agent's reader is
checked against), and the Task Library ImageClassifier's top-5 on every image (``reference.json``: ``images`` at
the model's size, ``resized`` at 320x240): that classifier reads the metadata itself (labels, normalization) and
does its own resize.

Usage: python write_metadata.py --out DIR --models STEP1_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tflite_support.metadata_writers import image_classifier, writer_utils
from tflite_support.task import core, processor, vision

ADJECTIVES = (
    "red",
    "green",
    "blue",
    "tiny",
    "giant",
    "striped",
    "spotted",
    "wooden",
    "metal",
    "glass",
    "paper",
    "woolly",
    "silver",
    "golden",
    "frozen",
    "burnt",
    "sleepy",
    "noisy",
    "quiet",
    "round",
    "square",
    "tall",
    "flat",
    "hollow",
    "shiny",
)
NOUNS = (
    "cat",
    "dog",
    "teapot",
    "bicycle",
    "lamp",
    "violin",
    "canoe",
    "kettle",
    "tractor",
    "mitten",
    "parrot",
    "kite",
    "anchor",
    "barrel",
    "candle",
    "drum",
    "easel",
    "fern",
    "goblet",
    "harp",
    "igloo",
    "jug",
    "ladder",
    "mortar",
    "needle",
    "oar",
    "piano",
    "quilt",
    "rake",
    "saddle",
    "thimble",
    "umbrella",
    "vase",
    "wagon",
    "yoyo",
    "zither",
    "acorn",
    "bucket",
    "comb",
    "dial",
)
MEAN, STD = 127.5, 127.5


def labels() -> list[str]:
    """1000 distinct names with spaces in them (a reader that splits on spaces gets them wrong)."""
    return [f"{ADJECTIVES[i % len(ADJECTIVES)]} {NOUNS[i // len(ADJECTIVES)]}" for i in range(1000)]


def classify(model: Path, images: list[Path]) -> dict[str, dict[str, list]]:
    """Task Library ImageClassifier, top-5 with no score floor, per image."""
    options = vision.ImageClassifierOptions(
        base_options=core.BaseOptions(file_name=str(model), num_threads=1),
        classification_options=processor.ClassificationOptions(max_results=5, score_threshold=0.0),
    )
    classifier = vision.ImageClassifier.create_from_options(options)
    answers = {}
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        categories = classifier.classify(vision.TensorImage.create_from_array(rgb)).classifications[0].categories
        answers[path.name] = {
            "top5": [[c.index, float(c.score)] for c in categories],
            "labels": [c.category_name for c in categories],
        }
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="step 1's output folder")
    args = parser.parse_args()
    out: Path = args.out
    for folder in ("images", "resized"):
        shutil.copytree(args.models / folder, out / folder, dirs_exist_ok=True)
    images, resized = sorted((out / "images").glob("*.png")), sorted((out / "resized").glob("*.png"))
    label_file = out / "labels.txt"
    label_file.write_text("\n".join(labels()) + "\n")
    reference: dict = {"threshold": 0.0, "normalization": {"mean": MEAN, "std": STD}, "models": {}}
    for kind in ("float", "uint8"):
        writer = image_classifier.MetadataWriter.create_for_inference(
            writer_utils.load_file(str(args.models / f"{kind}.tflite")), [MEAN], [STD], [str(label_file)]
        )
        model = out / f"{kind}_metadata.tflite"
        writer_utils.save_file(writer.populate(), str(model))
        (out / f"{kind}_writer_metadata.json").write_text(writer.get_metadata_json())
        reference["models"][kind] = {"file": model.name, "images": classify(model, images), "resized": classify(model, resized)}
        for name, answer in reference["models"][kind]["images"].items():
            print(kind, name, " ".join(f"{i}:{s:.3f}" for i, s in answer["top5"]))
    (out / "reference.json").write_text(json.dumps(reference, indent=1))


if __name__ == "__main__":
    main()
