"""Fixture builder (tflite-support venv): object-detector TFLite Metadata on the SSD format case's models.

Takes the SSD fixture of tests/conformance/formats (a TF SSD ending in TFLite_Detection_PostProcess, float and
uint8) and writes ``ssd_<kind>_metadata.tflite`` with tflite-support's own ``metadata_writers.object_detector``:
normalization mean/std 127.5 (the float model's [-1, 1]), a labels file packed into the model (on the category
output, as TENSOR_VALUE_LABELS), box properties on the location output. ``ssd_<kind>_writer_metadata.json`` is the
writer's JSON rendering of it. The answers stay those of the SSD case: the op's own outputs (its reference.json).

Usage: python write_detector_metadata.py --out DIR --ssd SSD_FIXTURE_DIR
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from tflite_support.metadata_writers import object_detector, writer_utils

# the synthetic scenes' classes (agent/sources/scenes.py CLASSES), the SSD's four non-background classes
LABELS = ("circle", "square", "triangle", "cross")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ssd", type=Path, required=True)
    args = parser.parse_args()
    out: Path = args.out
    shutil.copytree(args.ssd / "images", out / "images", dirs_exist_ok=True)
    shutil.copyfile(args.ssd / "reference.json", out / "reference.json")
    label_file = out / "ssd_labels.txt"
    label_file.write_text("\n".join(LABELS) + "\n")
    for kind in ("float", "uint8"):
        writer = object_detector.MetadataWriter.create_for_inference(
            writer_utils.load_file(str(args.ssd / f"{kind}.tflite")), [127.5], [127.5], [str(label_file)]
        )
        writer_utils.save_file(writer.populate(), str(out / f"ssd_{kind}_metadata.tflite"))
        (out / f"ssd_{kind}_writer_metadata.json").write_text(writer.get_metadata_json())
        print(kind, "written")


if __name__ == "__main__":
    main()
