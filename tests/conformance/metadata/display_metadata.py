"""Fixture builder (tflite-support venv): tflite-support's own reading of the TFLite Metadata in third-party models.

For each model given (Google's MediaPipe models, whose metadata Google wrote), it copies the file and writes what
``tflite_support.metadata.MetadataDisplayer`` makes of it: ``<stem>.displayer.json`` (the metadata as JSON) and
``<stem>.packed.json`` (each packed associated file's text). The agent's reader is checked against these.

Usage: python display_metadata.py --out DIR MODEL.tflite ...
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from tflite_support import metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args()
    for model in args.models:
        shutil.copyfile(model, args.out / model.name)
        displayer = metadata.MetadataDisplayer.with_model_file(str(model))
        (args.out / f"{model.stem}.displayer.json").write_text(displayer.get_metadata_json())
        packed = {
            name: displayer.get_associated_file_buffer(name).decode("utf-8")
            for name in displayer.get_packed_associated_file_list()
        }
        (args.out / f"{model.stem}.packed.json").write_text(json.dumps(packed))
        print(model.name, sorted(packed))


if __name__ == "__main__":
    main()
