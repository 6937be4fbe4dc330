"""read_model_metadata: what real model files say about themselves, and robustness against what they get wrong.

Oracles: the TFLite Metadata written by tflite-support's own writer, compared with that writer's JSON rendering of
it (fixture of tests/conformance/metadata, skipped without its venvs); ONNX ``metadata_props`` as ONNX Runtime
reads them from the same file; Ultralytics-style key/values written with the ``onnx`` package.
"""

from __future__ import annotations

import ast
import json
import logging
import zipfile
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from agent.errors import ModelFileError
from agent.model_metadata import ModelMetadata, is_ultralytics_metadata, read_model_metadata
from tests.conformance.metadata.fixture import MEDIAPIPE_MODELS

REPO = Path(__file__).resolve().parents[2]
DEMO_TFLITE = REPO / "models" / "demo" / "tflite-int8" / "model.tflite"
COCO_NAMES = {0: "person", 1: "bicycle", 2: "car", 3: "traffic light"}
ULTRALYTICS_PROPS = {
    "description": "Ultralytics YOLOv8n model trained on coco.yaml",
    "author": "Ultralytics",
    "version": "8.4.190",
    "license": "AGPL-3.0 License (https://ultralytics.com/license)",
    "stride": "32",
    "task": "detect",
    "batch": "1",
    "imgsz": "[480, 640]",
    "names": repr(COCO_NAMES),
    "end2end": "False",
}


def _onnx_model(path: Path, props: dict[str, str]) -> Path:
    """A one-node ONNX model carrying ``props`` as metadata_props, as exporters write them."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
    model.ir_version = 8
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_ultralytics_onnx_props(tmp_path: Path) -> None:
    meta = read_model_metadata(_onnx_model(tmp_path / "yolo.onnx", ULTRALYTICS_PROPS))
    assert meta.labels == ("person", "bicycle", "car", "traffic light")
    assert meta.input_size == (640, 480)  # imgsz is [h, w]
    assert (meta.task, meta.stride, meta.family) == ("detect", 32, "ultralytics")
    assert meta.normalization is None  # Ultralytics does not write it: the family convention is the loader's call
    assert meta.sources["labels"] == "ONNX metadata_props 'names'"
    assert meta.sources["input_size"] == "ONNX metadata_props 'imgsz'"
    assert meta.extra["author"] == "Ultralytics" and meta.extra["batch"] == "1" and meta.extra["end2end"] == "False"
    assert meta.extra["producer"] == "pytorch"


def test_onnx_props_agree_with_onnxruntime(tmp_path: Path) -> None:
    """The protobuf scan reads the same key/values ONNX Runtime does (names, imgsz, task come from them)."""
    path = _onnx_model(tmp_path / "m.onnx", ULTRALYTICS_PROPS)
    seen = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    meta = read_model_metadata(path)
    assert meta.labels == tuple(_names_by_id(seen["names"]))
    assert meta.task == seen["task"] and str(meta.stride) == seen["stride"]
    assert [meta.input_size[1], meta.input_size[0]] == json.loads(seen["imgsz"])  # type: ignore[index]


def _names_by_id(text: str) -> list[str]:
    """Ultralytics' ``names`` literal, in class-id order."""
    names = ast.literal_eval(text)
    return [names[i] for i in range(len(names))]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("names", "__import__('os').system('echo owned')"),  # never evaluated
        ("names", "{0: 'a', 2: 'c'}"),  # a gap in the class ids
        ("names", "{0: 'a'"),  # cut short
        ("imgsz", "[0, 640]"),
        ("imgsz", "big"),
        ("stride", "thirty-two"),
    ],
)
def test_malformed_prop_is_dropped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture, key: str, value: str) -> None:
    path = _onnx_model(tmp_path / "bad.onnx", {**ULTRALYTICS_PROPS, key: value})
    with caplog.at_level(logging.WARNING, logger="agent.model_metadata"):
        meta = read_model_metadata(path)
    field = {"names": "labels", "imgsz": "input_size", "stride": "stride"}[key]
    assert getattr(meta, field) is None
    assert meta.task == "detect"  # the other fields still count
    assert f"'{key}'" in caplog.text and "bad.onnx" in caplog.text


def test_truncated_onnx_warns_and_returns_what_it_has(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = _onnx_model(tmp_path / "whole.onnx", ULTRALYTICS_PROPS).read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(whole[: len(whole) - 40])
    with caplog.at_level(logging.WARNING, logger="agent.model_metadata"):
        read_model_metadata(cut)
    assert "cut.onnx" in caplog.text and "truncated" in caplog.text


def _bare_tflite(path: Path) -> Path:
    """The demo model's flatbuffer without the zip (our embedded manifest) appended to it."""
    with zipfile.ZipFile(DEMO_TFLITE) as archive:
        start = min(info.header_offset for info in archive.infolist())  # absolute: zipfile adds the prefix length
    path.write_bytes(DEMO_TFLITE.read_bytes()[:start])
    return path


def test_model_without_metadata_is_empty(tmp_path: Path) -> None:
    meta = read_model_metadata(_bare_tflite(tmp_path / "bare.tflite"))
    assert meta == ModelMetadata() and not meta


def test_ultralytics_tflite_metadata_json(tmp_path: Path) -> None:
    """Ultralytics appends ``metadata.json`` (JSON: class ids become strings) as a zip member."""
    model = _bare_tflite(tmp_path / "yolo_float32.tflite")
    doc = {**ULTRALYTICS_PROPS, "names": {str(k): v for k, v in COCO_NAMES.items()}, "imgsz": [320, 320], "stride": 32}
    with zipfile.ZipFile(model, "a") as archive:
        archive.writestr("metadata.json", json.dumps(doc))
    meta = read_model_metadata(model)
    assert meta.labels == ("person", "bicycle", "car", "traffic light")
    assert meta.input_size == (320, 320) and meta.stride == 32 and meta.family == "ultralytics"
    assert meta.sources["labels"] == "metadata.json 'names'"


def test_own_embedded_manifest_is_not_taken_for_ultralytics() -> None:
    """The demo model embeds our manifest under the same member name; agent/manifest.py reads that, not this."""
    with zipfile.ZipFile(DEMO_TFLITE) as archive:
        ours = json.loads(archive.read("metadata.json"))
    assert read_model_metadata(DEMO_TFLITE) == ModelMetadata()
    assert not is_ultralytics_metadata(ours)
    assert is_ultralytics_metadata({**ULTRALYTICS_PROPS, "imgsz": [320, 320]})


@pytest.mark.parametrize("content", [b"", b"not a model at all" * 10, b"\xff" * 64])
def test_garbage_file_reads_empty(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.tflite"
    path.write_bytes(content)
    assert read_model_metadata(path) == ModelMetadata()


def test_missing_file_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"nothing\.onnx"):
        read_model_metadata(tmp_path / "nothing.onnx")


# --- real TFLite Metadata, written by tflite-support's own writer --------------------------------------


@pytest.fixture(scope="module")
def written() -> Path:
    from tests.conformance.metadata.fixture import classifier_fixture

    return classifier_fixture()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_tflite_metadata_matches_the_writer(written: Path, kind: str) -> None:
    meta = read_model_metadata(written / f"{kind}_metadata.tflite")
    doc = json.loads((written / f"{kind}_writer_metadata.json").read_text())
    tensor_in = doc["subgraph_metadata"][0]["input_tensor_metadata"][0]
    options = next(u["options"] for u in tensor_in["process_units"] if u["options_type"] == "NormalizationOptions")
    assert meta.normalization == (tuple(options["mean"]), tuple(options["std"]))
    assert meta.input_range == (tensor_in["stats"]["min"][0], tensor_in["stats"]["max"][0])
    assert meta.color_space == tensor_in["content"]["content_properties"]["color_space"]
    label_file = doc["subgraph_metadata"][0]["output_tensor_metadata"][0]["associated_files"][0]["name"]
    assert meta.labels == tuple((written / label_file).read_text().splitlines())
    assert len(meta.labels) == 1000 and meta.labels[285] == "paper kite"
    assert meta.sources["labels"] == f"TFLite metadata ({label_file}, output 0)"
    assert meta.sources["normalization"] == "TFLite metadata NormalizationOptions"
    assert meta.task == "classify"
    assert (meta.extra["name"], meta.extra["description"]) == (doc["name"], doc["description"])


@pytest.mark.slow
def test_label_file_missing_from_the_zip(written: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = (written / "float_metadata.tflite").read_bytes()
    stripped = tmp_path / "nolabels.tflite"
    stripped.write_bytes(data[: data.rfind(b"PK\x03\x04")])  # the flatbuffer without its packed files
    with caplog.at_level(logging.WARNING, logger="agent.model_metadata"):
        meta = read_model_metadata(stripped)
    assert meta.labels is None and meta.normalization == ((127.5,), (127.5,))
    assert "labels.txt" in caplog.text and "nolabels.tflite" in caplog.text


@pytest.mark.slow
def test_corrupt_metadata_flatbuffer(written: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = bytearray((written / "float_metadata.tflite").read_bytes())
    at = data.find(b"M001") - 4  # the metadata flatbuffer's root offset sits before its identifier
    data[at : at + 4] = (0x7FFFFFF0).to_bytes(4, "little")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="agent.model_metadata"):
        meta = read_model_metadata(broken)
    assert meta.normalization is None and meta.labels is None
    assert "TFLITE_METADATA" in caplog.text and "broken.tflite" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("case", ["yolov8n_static", "yolov8n_dynamic", "yolov8n_cls"])
def test_real_ultralytics_onnx_export(case: str) -> None:
    """Ultralytics' exporter wrote the file; Ultralytics' own backend's reading of it is the oracle."""
    from tests.conformance.metadata.fixture import ultralytics_exports

    folder = ultralytics_exports()
    expected = json.loads((folder / "expected.json").read_text())[case]
    meta = read_model_metadata(folder / f"{case}.onnx")
    names = expected["names"]
    assert meta.labels == tuple(names[str(i)] for i in range(len(names)))
    height, width = expected["imgsz"]
    assert meta.input_size == (width, height)
    assert (meta.task, meta.stride, meta.family) == (expected["task"], expected["stride"], "ultralytics")
    assert meta.extra["end2end"] == str(expected["end2end"]) and meta.extra["dynamic"] == str(expected["dynamic"])


def _displayed(doc: dict, packed: dict[str, str]) -> dict[str, object]:
    """What tflite-support's JSON rendering says, in the reader's terms (one value stands for every channel)."""
    subgraph = doc["subgraph_metadata"][0]
    tensor_in = subgraph["input_tensor_metadata"][0]
    found: dict[str, object] = {"normalization": None, "input_range": None, "labels": None}
    for unit in tensor_in.get("process_units", []):
        if unit["options_type"] == "NormalizationOptions":
            found["normalization"] = (tuple(unit["options"]["mean"]), tuple(unit["options"]["std"]))
    stats = tensor_in.get("stats", {})
    if stats.get("min"):
        found["input_range"] = (min(stats["min"]), max(stats["max"]))
    found["color_space"] = tensor_in.get("content", {}).get("content_properties", {}).get("color_space")
    for tensor in subgraph["output_tensor_metadata"]:
        files = [f for f in tensor.get("associated_files", []) if f["type"] in ("TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS")]
        if files and found["labels"] is None:
            lines = [line.strip() for line in packed[files[0]["name"]].splitlines()]
            while lines and not lines[-1]:
                lines.pop()
            found["labels"] = tuple(lines)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("model", [Path(name).name for name in MEDIAPIPE_MODELS])
def test_google_written_metadata_reads_as_tflite_support_reads_it(model: str) -> None:
    """Third-party files: MediaPipe's models, metadata written by Google; oracle: tflite-support's MetadataDisplayer."""
    from tests.conformance.metadata.fixture import mediapipe_models_displayed

    folder = mediapipe_models_displayed()
    stem = Path(model).stem
    doc = json.loads((folder / f"{stem}.displayer.json").read_text())
    expected = _displayed(doc, json.loads((folder / f"{stem}.packed.json").read_text()))
    meta = read_model_metadata(folder / model)
    assert meta.normalization == expected["normalization"]
    assert meta.input_range == expected["input_range"]
    assert meta.color_space == expected["color_space"]
    assert meta.labels == expected["labels"]
    assert meta.extra.get("name") == doc.get("name")
    # a mask output is a segmenter (never taken for a classifier); MediaPipe's detectors do not declare box outputs
    assert meta.task == ("segment" if stem.startswith("selfie") else None)


@pytest.mark.slow
def test_damaged_metadata_never_raises(written: Path, tmp_path: Path) -> None:
    """Random byte damage in the metadata flatbuffer, and cuts anywhere: always a result, never an exception."""
    import random

    data = (written / "float_metadata.tflite").read_bytes()
    start = data.find(b"M001") - 4
    end = data.rfind(b"PK\x03\x04")
    rng = random.Random(13)
    path = tmp_path / "damaged.tflite"
    logging.getLogger("agent.model_metadata").setLevel(logging.ERROR)  # hundreds of expected warnings
    try:
        for _ in range(300):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(start, end)] = rng.randrange(256)
            path.write_bytes(bytes(damaged))
            assert isinstance(read_model_metadata(path), ModelMetadata)
        for _ in range(50):
            path.write_bytes(data[: rng.randrange(len(data))])
            assert isinstance(read_model_metadata(path), ModelMetadata)
    finally:
        logging.getLogger("agent.model_metadata").setLevel(logging.NOTSET)
