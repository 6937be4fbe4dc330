"""Conformance: an SSD (TFLite_Detection_PostProcess) carrying object-detector TFLite Metadata, loaded bare.

The metadata is written by tflite-support's own ``metadata_writers.object_detector`` onto the SSD format case's
models; the reference answers are that case's: the post-process op's own outputs (tests/conformance/formats).
The agent gets only the file: labels must come from the packed label file, normalization from the metadata.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest

from agent.detector import load_detector
from agent.manifest import Thresholds
from agent.model_metadata import read_model_metadata
from tests.conformance.metadata.fixture import KINDS, ssd_with_metadata
from tests.conformance.refs import assert_detections_match

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", KINDS)
def test_reader_sees_what_the_writer_wrote(kind: str) -> None:
    folder = ssd_with_metadata()
    doc = json.loads((folder / f"ssd_{kind}_writer_metadata.json").read_text())
    meta = read_model_metadata(folder / f"ssd_{kind}_metadata.tflite")
    outputs = doc["subgraph_metadata"][0]["output_tensor_metadata"]
    position, label_file = next(
        (i, f["name"]) for i, t in enumerate(outputs) for f in t.get("associated_files", []) if f["type"] == "TENSOR_VALUE_LABELS"
    )
    assert meta.labels == tuple((folder / label_file).read_text().split())
    assert meta.sources["labels"] == f"TFLite metadata ({label_file}, output {position})"
    assert meta.task == "detect" and meta.normalization == ((127.5,), (127.5,))


@pytest.mark.parametrize("kind", KINDS)
def test_bare_load_matches_the_op(kind: str, tmp_path: Path) -> None:
    folder = ssd_with_metadata()
    reference = json.loads((folder / "reference.json").read_text())
    threshold = reference["threshold"]
    model = tmp_path / f"ssd_{kind}_metadata.tflite"  # alone: no manifest beside it
    shutil.copyfile(folder / model.name, model)
    names = (folder / "ssd_labels.txt").read_text().split()
    detector = load_detector(model, thresholds=Thresholds(score=threshold))
    matched = 0
    try:
        for name, answer in sorted(reference["models"][kind]["images"].items()):
            found = detector.detect(cv2.imread(str(folder / "images" / name), cv2.IMREAD_COLOR))
            matched += assert_detections_match(found, answer["detections"], threshold, f"{kind} {name}")
            assert [d.label for d in found] == [names[d.class_id] for d in found], f"{kind} {name}: labels not from the metadata"
    finally:
        detector.close()
    assert matched >= 5, f"only {matched} boxes compared: the case says little"
