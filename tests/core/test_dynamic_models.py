"""Models with dynamic axes load bare: batch fixed to 1, spatial size from config > manifest > model metadata.

Every model here is a real ONNX file built with ``onnx.helper`` and run by ONNX Runtime; a dynamic
model run at a size must answer exactly as its static twin (same weights, size fixed in the file).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.backends.base import BackendOptions
from agent.detector import Detector, load_detector
from agent.errors import DecoderError, ManifestError, ModelFileError
from agent.manifest import Thresholds
from tests.core.onnx_builders import classifier, two_unknown_outputs, yolo_like

LOW = Thresholds(score=0.05, iou=0.5, max_detections=50)


def _image(seed: int = 3, w: int = 320, h: int = 240) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _load(path: Path, size: tuple[int, int] | None = None) -> Detector:
    return load_detector(path, BackendOptions(threads=1), thresholds=LOW, input_size=size)


def _rows(detector: Detector, image: np.ndarray) -> list[tuple[int, float, tuple[float, ...]]]:
    return [
        (d.class_id, round(d.score, 5), tuple(round(v, 2) for v in (d.box.x1, d.box.y1, d.box.x2, d.box.y2)))
        for d in detector.detect(image)
    ]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("in_dims", "out_dims"),
    [(["batch", 3, "height", "width"], ["batch", 6, "anchors"]), ([None, 3, None, None], [None, 6, None])],
    ids=["symbolic", "unnamed"],
)
def test_dynamic_model_answers_as_its_static_twin(tmp_path: Path, in_dims: list, out_dims: list) -> None:
    dynamic = _load(yolo_like(tmp_path / "dyn.onnx", in_dims, out_dims), size=(128, 96))
    (tmp_path / "static").mkdir()
    static = _load(yolo_like(tmp_path / "static" / "twin.onnx", [1, 3, 96, 128], [1, 6, 192]))
    try:
        assert dynamic.backend.input.shape == (1, 3, 96, 128)
        assert dynamic.backend.outputs[0].shape == (1, 6, 192)
        assert dynamic.sources["input.size"] == "config model.input_size"
        image = _image()
        rows = _rows(dynamic, image)
        assert rows and rows == _rows(static, image)
        # outputs are preallocated and bound: the same array is written by every invoke
        first = dynamic.backend.output_arrays()[0]
        dynamic.invoke()
        assert dynamic.backend.output_arrays()[0] is first
        for ctx in dynamic.contexts(2):  # a forked context runs at the same size, with its own buffers
            assert ctx.input_array().shape == (1, 3, 96, 128)
    finally:
        dynamic.close()
        static.close()


def test_dynamic_batch_alone_just_works(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = classifier(tmp_path / "cls.onnx", ["N", 3, 32, 32], classes=5)
    detector = _load(model)
    try:
        assert detector.backend.input.shape == (1, 3, 32, 32)
        assert detector.manifest.decoder.type == "classifier" and detector.labels == tuple(f"class{i}" for i in range(5))
        results = detector.detect(_image())
        # ORT run directly on the very input the agent wrote gives the same ranking and scores
        probs = ort.InferenceSession(str(model)).run(None, {"input": detector.backend.input_array().copy()})[0][0]
        expected = [(int(c), float(probs[c])) for c in np.argsort(-probs) if probs[c] >= LOW.score]
        assert [(r.class_id, round(r.score, 5)) for r in results] == [(c, round(s, 5)) for c, s in expected]
        assert results[0].box is None
        assert detector.sources["input.size"] == "model tensor"
    finally:
        detector.close()


ULTRALYTICS_PROPS = {
    "author": "Ultralytics",
    "task": "detect",
    "stride": "8",
    "imgsz": "[96, 128]",  # Ultralytics writes [height, width]
    "names": "{0: 'cat', 1: 'dog'}",
}


def test_ultralytics_metadata_gives_size_labels_and_conventions(tmp_path: Path) -> None:
    model = yolo_like(tmp_path / "yolo.onnx", ["batch", 3, "height", "width"], ["batch", 6, "anchors"], props=ULTRALYTICS_PROPS)
    detector = load_detector(model, BackendOptions(threads=1))
    try:
        assert detector.backend.input.shape == (1, 3, 96, 128)
        assert detector.labels == ("cat", "dog")
        assert "imgsz" in detector.sources["input.size"] and "names" in detector.sources["labels"]
        spec = detector.manifest.input
        assert (spec.normalization.mean, spec.normalization.std) == ((0.0,) * 3, (255.0,) * 3)
        assert spec.resize.value == "letterbox" and spec.pad_value == 114 and spec.color.value == "RGB"
        assert "ultralytics" in detector.sources["input.normalization"]
        # Ultralytics predict defaults: conf 0.25, iou 0.7, max_det 300
        assert detector.manifest.thresholds == Thresholds(score=0.25, iou=0.7, max_detections=300)
        assert {d.label for d in detector.detect(_image())} <= {"cat", "dog"}
    finally:
        detector.close()
    # the config still wins over the file's own imgsz
    detector = load_detector(model, BackendOptions(threads=1), input_size=(64, 64))
    assert detector.backend.input.shape == (1, 3, 64, 64)
    detector.close()


def test_no_size_anywhere_names_all_three_places(tmp_path: Path) -> None:
    model = yolo_like(tmp_path / "dyn.onnx", ["batch", 3, "height", "width"], ["batch", 6, "anchors"])
    with pytest.raises(ManifestError) as info:
        _load(model)
    message = str(info.value)
    assert "dyn.onnx" in message and "'images'" in message
    assert "model.input_size" in message and "input.width" in message and "imgsz" in message


def test_size_contradicting_a_static_model_is_refused(tmp_path: Path) -> None:
    model = yolo_like(tmp_path / "static.onnx", [1, 3, 96, 128], [1, 6, 192])
    with pytest.raises(ManifestError, match=r"model\.input_size \[64, 64\].*\[128, 96\]"):
        _load(model, size=(64, 64))
    _load(model, size=(128, 96)).close()  # the same size is fine


def test_one_symbol_for_both_axes_needs_a_square_size(tmp_path: Path) -> None:
    model = yolo_like(tmp_path / "square.onnx", ["b", 3, "size", "size"], ["b", 6, "n"])
    with pytest.raises(ManifestError, match=r"'size' for two axes.*square"):
        _load(model, size=(128, 96))
    detector = _load(model, size=(96, 96))
    assert detector.backend.input.shape == (1, 3, 96, 96)
    detector.close()


def test_metadata_labels_that_do_not_fit_the_outputs_are_refused(tmp_path: Path) -> None:
    props = {**ULTRALYTICS_PROPS, "names": "{0: 'cat', 1: 'dog', 2: 'bird'}"}
    model = yolo_like(tmp_path / "yolo.onnx", ["batch", 3, "height", "width"], ["batch", 6, "anchors"], props=props)
    with pytest.raises(DecoderError, match=r"(?s)names.*3 classes.*output0"):
        _load(model)


def test_outputs_matching_no_decoder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DecoderError, match=r"(?s)cannot tell how to decode.*decoder\.type"):
        _load(two_unknown_outputs(tmp_path / "odd.onnx"))


def test_inspect_shows_declared_tensors_and_what_is_missing(tmp_path: Path) -> None:
    model = yolo_like(tmp_path / "dyn.onnx", ["batch", 3, "height", "width"], ["batch", 6, "anchors"])
    proc = _cli("models", "inspect", str(model), "--json")
    assert proc.returncode == 3, proc.stderr
    info = json.loads(proc.stdout)
    assert info["inputs"] == [{"name": "images", "shape": ["batch", 3, "height", "width"], "dtype": "float32"}]
    assert info["outputs"][0]["shape"] == ["batch", 6, "anchors"]
    assert info["loadable"] is False and "model.input_size" in info["error"]
    assert [m["what"] for m in info["missing"]] == ["input size (the input's spatial axes are dynamic)"]
    assert "model.input_size" in info["missing"][0]["supply"]
    proc = _cli("models", "inspect", str(model), "--json", "--input-size", "128x96")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["runs_as"]["inputs"][0]["shape"] == [1, 3, 96, 128]
    assert info["sources"]["input.size"] == "config model.input_size" and info["sources"]["decoder"].startswith("guess")
    text = _cli("models", "inspect", str(model))  # the table form says the same
    assert text.returncode == 3 and "[batch, 3, height, width]" in text.stdout and "missing: input size" in text.stdout


def test_inspect_of_outputs_no_decoder_fits(tmp_path: Path) -> None:
    proc = _cli("models", "inspect", str(two_unknown_outputs(tmp_path / "odd.onnx")), "--json")
    assert proc.returncode == 3
    info = json.loads(proc.stdout)
    assert [o["shape"] for o in info["outputs"]] == [[1, 21], [1, 21]]
    assert "decoder.type" in info["missing"][0]["supply"]


@pytest.mark.parametrize("command", ["inspect", "detect"])
def test_truncated_or_foreign_file_exits_3_naming_it(tmp_path: Path, command: str) -> None:
    good = yolo_like(tmp_path / "m.onnx", [1, 3, 96, 128], [1, 6, 192])
    for payload in (good.read_bytes()[:200], b"GIF89a not a model at all"):
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(payload)
        args = ["models", "inspect", str(bad)] if command == "inspect" else ["detect", "--model", str(bad), "x.jpg"]
        proc = _cli(*args)
        assert proc.returncode == 3, proc.stderr
        assert "bad.onnx" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ModelFileError, match=r"bad\.onnx"):
        _load(tmp_path / "bad.onnx")


def test_detect_and_run_take_model_input_size_from_the_config(tmp_path: Path) -> None:
    import cv2

    model = yolo_like(tmp_path / "dyn.onnx", ["batch", 3, "height", "width"], ["batch", 6, "anchors"])
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), _image())
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {model}\n  input_size: [128, 96]\n  score_threshold: 0.05\n")
    proc = _cli("detect", "-c", str(config), str(image))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["detections"]
    out = tmp_path / "out.jsonl"
    config.write_text(
        f"model:\n  path: {model}\n  input_size: 96\nsource:\n  type: synthetic\n  frames: 3\n"
        f"sinks:\n  - type: jsonl\n    path: {out}\n"
    )
    proc = _cli("run", "-c", str(config), "--frames", "3")
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 3
    config.write_text(f"model:\n  path: {model}\n")  # no size anywhere: a model error, exit 3
    proc = _cli("detect", "-c", str(config), str(image))
    assert proc.returncode == 3 and "model.input_size" in proc.stderr


def test_bench_model_measures_any_model_file(tmp_path: Path) -> None:
    model = yolo_like(tmp_path / "dyn.onnx", ["batch", 3, "height", "width"], ["batch", 6, "anchors"])
    out = tmp_path / "bench.json"
    proc = _cli(
        "bench-model", str(model), "--input-size", "640", "--frames", "20", "--min-seconds", "0.05",
        "--rounds", "1", "--threads", "1", "--output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out.read_text())["rows"][0]
    assert row["input_shape"] == [1, 3, 640, 640]
    assert row["raw_fps"] > 0 and row["pipeline_fps"] > 0
    assert row["pipeline_vs_raw"] == pytest.approx(row["pipeline_fps"] / row["raw_fps"], rel=0.35)
