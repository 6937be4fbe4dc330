"""Loading models: backends agree, bad files and mismatched manifests are refused clearly."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agent.backends.base import BackendOptions
from agent.decoders.nms import iou
from agent.demo import demo_model_path, selftest_dir
from agent.detector import load_detector
from agent.errors import DecoderError, ManifestError, ModelFileError
from agent.manifest import EMBEDDED_ONNX_KEY, EMBEDDED_TFLITE_MEMBER, ModelManifest, find_manifest
from agent.sources.base import PixelFormat


def _model_file(variant: str) -> Path:
    folder = demo_model_path(variant)
    return next(p for p in folder.iterdir() if p.suffix in (".tflite", ".onnx"))


def _selftest_images() -> list[np.ndarray]:
    import cv2

    paths = sorted(p for p in selftest_dir().iterdir() if p.suffix in (".png", ".jpg"))
    assert len(paths) >= 8
    return [cv2.imread(str(p)) for p in paths]


def _copy_variant(variant: str, tmp_path: Path) -> Path:
    dst = tmp_path / variant
    shutil.copytree(demo_model_path(variant), dst)
    return dst


def _match_rate(a: list, b: list, thr: float = 0.7) -> float:
    """Share of detections in ``a`` with a same-class detection in ``b`` at IoU >= thr."""
    if not a:
        return 1.0 if not b else 0.0
    hits = 0
    for d in a:
        boxes = [(e.box.x1, e.box.y1, e.box.x2, e.box.y2) for e in b if e.class_id == d.class_id]
        if (
            boxes
            and iou(np.array([(d.box.x1, d.box.y1, d.box.x2, d.box.y2)], np.float32), np.array(boxes, np.float32)).max() >= thr
        ):
            hits += 1
    return hits / len(a)


@pytest.mark.parametrize(
    ("a", "b", "tolerance"),
    [("tflite-fp32", "onnx-fp32", 0.98), ("tflite-int8", "onnx-int8", 0.85), ("tflite-fp32", "tflite-int8", 0.85)],
)
def test_backends_give_the_same_detections(a: str, b: str, tolerance: float) -> None:
    da = load_detector(demo_model_path(a), BackendOptions(threads=1))
    db = load_detector(demo_model_path(b), BackendOptions(threads=1))
    rates = []
    for image in _selftest_images():
        ra, rb = da.detect(image), db.detect(image)
        rates += [_match_rate(ra, rb), _match_rate(rb, ra)]
        if a.endswith("fp32") and b.endswith("fp32"):
            for x, y in zip(sorted(ra, key=lambda d: -d.score), sorted(rb, key=lambda d: -d.score), strict=True):
                assert abs(x.score - y.score) < 0.02
    da.close()
    db.close()
    assert np.mean(rates) >= tolerance, rates


def test_every_variant_carries_an_embedded_manifest(tmp_path: Path) -> None:
    for variant in ("tflite-int8", "onnx-fp32"):
        folder = _copy_variant(variant, tmp_path)
        (folder / "model.json").unlink()
        model = next(p for p in folder.iterdir() if p.suffix in (".tflite", ".onnx"))
        manifest, origin = find_manifest(model)
        assert manifest is not None and origin and "embedded" in origin
        detector = load_detector(folder, BackendOptions(threads=1))
        assert detector.manifest.labels == manifest.labels
        detector.close()


def test_truncated_model_is_refused_by_hash(tmp_path: Path) -> None:
    folder = _copy_variant("tflite-int8", tmp_path)
    model = next(folder.glob("*.tflite"))
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(ManifestError, match=r"sha256.*replaced, truncated or corrupted"):
        load_detector(folder)


@pytest.mark.parametrize("variant", ["tflite-int8", "onnx-fp32"])
def test_corrupt_model_without_manifest_is_a_model_file_error(variant: str, tmp_path: Path) -> None:
    src = _model_file(variant)
    bad = tmp_path / src.name
    data = bytearray(src.read_bytes())
    bad.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ModelFileError, match=str(bad.name)):
        load_detector(bad)
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match=str(bad.name)):
        load_detector(bad)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_detector(tmp_path / "nope.tflite")
    (tmp_path / "model.pb").write_bytes(b"x")
    with pytest.raises(ModelFileError, match=r"unknown model format '\.pb'"):
        load_detector(tmp_path / "model.pb")


def _rewrite_manifest(folder: Path, **changes: object) -> None:
    path = folder / "model.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    path.write_text(json.dumps(data))


def test_manifest_with_wrong_input_size_is_refused(tmp_path: Path) -> None:
    folder = _copy_variant("tflite-int8", tmp_path)
    _rewrite_manifest(folder, input__width=320, input__height=320)
    with pytest.raises(ManifestError, match=r"320x320.*has shape"):
        load_detector(folder)


def test_manifest_with_wrong_dtype_is_refused(tmp_path: Path) -> None:
    folder = _copy_variant("onnx-fp32", tmp_path)
    _rewrite_manifest(folder, input__dtype="uint8")
    with pytest.raises(ManifestError, match="dtype uint8 does not match"):
        load_detector(folder)


def test_manifest_with_wrong_label_count_is_refused(tmp_path: Path) -> None:
    folder = _copy_variant("onnx-fp32", tmp_path)
    _rewrite_manifest(folder, labels=["a", "b", "c", "d", "e", "f"])
    with pytest.raises(DecoderError, match=r"model\.json"):
        load_detector(folder)


def test_malformed_manifest_names_field(tmp_path: Path) -> None:
    folder = _copy_variant("onnx-fp32", tmp_path)
    _rewrite_manifest(folder, input__layout="CHWN")
    with pytest.raises(ManifestError, match=r"input\.layout"):
        load_detector(folder)


def test_model_without_manifest_is_inferred(tmp_path: Path) -> None:
    src = _model_file("onnx-fp32")
    import onnx

    model = onnx.load(str(src))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    detector = load_detector(bare, BackendOptions(threads=1))
    assert detector.manifest_origin == "read from the model (no manifest)"
    assert detector.manifest.decoder.type == "yolov8" and len(detector.labels) == 4
    assert detector.manifest.input.layout.value == "NCHW"
    detector.close()


def test_delegate_that_cannot_load_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    options = BackendOptions(threads=1, delegate="/nonexistent/libedgetpu.so.1")
    detector = load_detector(demo_model_path("tflite-int8"), options)
    assert detector.backend.delegate_in_use is None
    assert any("libedgetpu" in r.getMessage() and "CPU" in r.getMessage() for r in caplog.records)
    assert detector.detect(_selftest_images()[0]) is not None
    detector.close()


def test_embedded_manifest_layout_is_as_documented() -> None:
    with zipfile.ZipFile(_model_file("tflite-int8")) as zf:
        ModelManifest.model_validate_json(zf.read(EMBEDDED_TFLITE_MEMBER))
    import onnx

    props = {p.key: p.value for p in onnx.load(str(_model_file("onnx-int8"))).metadata_props}
    ModelManifest.model_validate_json(props[EMBEDDED_ONNX_KEY])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120)


def test_models_inspect_cli() -> None:
    proc = _cli("models", "inspect", str(_model_file("tflite-int8")), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["backend"] == "litert" and info["manifest"]["decoder"]["type"] == "yolov8"
    assert len(info["outputs"]) == 1 and info["inputs"][0]["shape"][0] == 1


def test_detect_cli_with_annotations(tmp_path: Path) -> None:
    images = sorted(p for p in selftest_dir().iterdir() if p.suffix in (".png", ".jpg"))[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    proc = _cli("detect", *map(str, images), str(broken), "--save-annotated", str(tmp_path / "out"))
    assert proc.returncode == 1  # the broken image is reported, the others still processed
    assert "broken.jpg" in proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == 3 and all(r["detections"] for r in results)
    assert len(list((tmp_path / "out").glob("*.annotated.jpg"))) == 3


def test_detect_on_yuv_frames_matches_bgr() -> None:
    import cv2

    detector = load_detector(demo_model_path("tflite-fp32"), BackendOptions(threads=1))
    image = _selftest_images()[0]
    image = cv2.resize(image, (640, 480))
    bgr = detector.detect(image)
    yuv = detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), PixelFormat.YUV420)
    assert _match_rate(bgr, yuv) >= 0.8
    detector.close()
