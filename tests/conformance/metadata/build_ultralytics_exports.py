"""Fixture builder (Ultralytics venv): real Ultralytics ONNX exports and Ultralytics' own reading of their metadata.

Exports, with Ultralytics' exporter, a YOLOv8n detector (random weights from its yaml, custom class names,
a non-square ``imgsz`` so that ``[h, w]`` cannot pass for ``[w, h]``), the same with ``dynamic=True``, and a
YOLOv8n-cls classifier. ``expected.json`` holds what Ultralytics' own backend makes of each file's metadata
(``BaseBackend.read_metadata`` + ``apply_metadata``): the oracle for the agent's reader.

Usage: python build_ultralytics_exports.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml
from ultralytics import YOLO
from ultralytics.nn.backends.base import BaseBackend
from ultralytics.utils.checks import check_yaml

NAMES = {0: "person", 1: "traffic light", 2: "hot dog"}
CLS_NAMES = {i: f"kind {i}" for i in range(1000)}
CASES = {
    "yolov8n_static": ("yolov8n-3.yaml", {"imgsz": (160, 224), "dynamic": False}),
    "yolov8n_dynamic": ("yolov8n-3.yaml", {"imgsz": (160, 224), "dynamic": True}),
    "yolov8n_cls": ("yolov8n-cls.yaml", {"imgsz": 96, "dynamic": False}),
}


class _Reader(BaseBackend):
    """Only the metadata handling of Ultralytics' backend base (no runtime is loaded)."""

    def __init__(self) -> None:  # the base would open a model; the metadata methods need none of it
        self.dynamic = False

    def load_model(self, weight: str) -> None:  # abstract in the base
        raise NotImplementedError

    def forward(self, im):  # abstract in the base
        raise NotImplementedError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    # a three-class YOLOv8n: Ultralytics' own yaml with nc set (the file name keeps the "n" scale)
    config = yaml.safe_load(Path(check_yaml("yolov8.yaml")).read_text())
    (out / "yolov8n-3.yaml").write_text(yaml.safe_dump({**config, "nc": len(NAMES)}))
    expected = {}
    for name, (config_file, options) in CASES.items():
        model = YOLO(str(out / config_file) if (out / config_file).exists() else config_file)
        model.model.names = dict(NAMES if model.task == "detect" else CLS_NAMES)
        exported = Path(model.export(format="onnx", batch=1, simplify=False, **options))
        target = out / f"{name}.onnx"
        shutil.move(exported, target)
        reader = _Reader()
        reader.apply_metadata(BaseBackend.read_metadata(target))
        expected[name] = {key: getattr(reader, key, None) for key in ("names", "imgsz", "stride", "task", "end2end", "dynamic")}
        expected[name]["names"] = {str(k): v for k, v in expected[name]["names"].items()}
        print(name, json.dumps(expected[name])[:300])
    (out / "expected.json").write_text(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
