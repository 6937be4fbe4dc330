"""Fixture builder (Ultralytics reference venv): an Ultralytics ``.pt`` checkpoint and Ultralytics' own answers on it.

``--model yolov8n.yaml`` builds the family from its yaml and gives the random weights structure the way
tests/conformance/ultralytics/build_formats.py does (shared code, so the probe scenes and scores agree);
``--model path/to/best.pt`` takes a trained checkpoint as it is. Writes ``--out``:

    model.pt                  the checkpoint (Ultralytics' own save)
    images/probe_*            the probe scenes of build_formats.py
    reference.json            Ultralytics ``predict`` on model.pt (tests/conformance/refs.py format)
    model.torchscript         with --torchscript: Ultralytics' TorchScript export (+ reference_torchscript.json)

The trained checkpoint's exports, held-out split and Ultralytics val live in the conformance fixture
(tests/conformance/ultralytics/fixtures.py: trained_fixture); this builder only adds what it lacks, .pt files
of the random-weight families.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "conformance" / "ultralytics"))

from build_formats import CONF, IOU, PROBE_SEED, give_structure, predict_reference  # noqa: E402
from scene_data import write_probe_images  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", required=True, help="an Ultralytics model yaml (e.g. yolo11n.yaml) or a trained .pt")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--torchscript", action="store_true", help="also Ultralytics' TorchScript export, answered too")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ["YOLO_CONFIG_DIR"] = str(out / ".ultralytics")
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    images = write_probe_images(out / "images", PROBE_SEED)
    target = out / "model.pt"
    if args.model.endswith(".pt"):
        shutil.copyfile(REPO / args.model, target)
    else:
        model = YOLO(args.model)
        give_structure(model.model, images, args.imgsz)
        model.save(str(target))
    reference = predict_reference(target, images, args.imgsz, out)
    assert reference["threshold"] == CONF and reference["iou"] == IOU
    (out / "reference.json").write_text(json.dumps(reference, indent=1))
    if args.torchscript:
        made = Path(YOLO(str(target)).export(format="torchscript", imgsz=args.imgsz, device="cpu"))
        shutil.move(str(made), out / "model.torchscript")
        scripted = predict_reference(out / "model.torchscript", images, args.imgsz, out)
        (out / "reference_torchscript.json").write_text(json.dumps(scripted, indent=1))
    print(json.dumps({"boxes": sum(len(v["detections"]) for v in reference["images"].values())}))


if __name__ == "__main__":
    main()
