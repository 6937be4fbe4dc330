"""The candidate self-test on real models: the demo models pass, broken edits of them fail for the right reason."""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.backends.base import BackendOptions
from agent.demo import VARIANTS, demo_model_path
from agent.detector import Detector, load_detector
from agent.manifest import ClassifierDecoder, ModelManifest, Task, Thresholds, sha256_file
from agent.ota.errors import SelfTestError
from agent.ota.selftest import (
    SelfTestFailed,
    SelfTestFrame,
    SelfTestReport,
    bundled_selftest_dir,
    load_candidate,
    load_frames,
    run_selftest,
    validate_candidate,
)
from agent.sources.base import PixelFormat

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402 - after the importorskip guard

DEMO_ONNX = demo_model_path("onnx-fp32")


@pytest.fixture(scope="module")
def frames() -> list[SelfTestFrame]:
    return load_frames(bundled_selftest_dir())


@pytest.fixture
def opened() -> Iterator[Callable[[Path], Detector]]:
    """Load models through the updater's entry point and close them after the test."""
    detectors: list[Detector] = []

    def open_(path: Path) -> Detector:
        detectors.append(load_candidate(path, BackendOptions(threads=1)))
        return detectors[-1]

    yield open_
    for det in detectors:
        det.close()


def _write_model(folder: Path, model: onnx.ModelProto, manifest: dict) -> Path:
    """``model.onnx`` + a ``model.json`` sidecar whose sha256 is the edited file's."""
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    manifest = {**manifest, "file": "model.onnx", "sha256": sha256_file(folder / "model.onnx")}
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


def _edited_demo(tmp_path: Path, edit: Callable[[onnx.ModelProto, dict[str, onnx.TensorProto]], None]) -> Path:
    """The float demo detector with its graph or weights changed by ``edit``, as a new model version."""
    model = onnx.load(str(DEMO_ONNX / "model.onnx"))
    edit(model, {init.name: init for init in model.graph.initializer})
    manifest = json.loads((DEMO_ONNX / "model.json").read_text())
    return _write_model(tmp_path / "edited", model, {**manifest, "version": "1.0.1"})


def _scale(name: str, factor: float) -> Callable[[onnx.ModelProto, dict[str, onnx.TensorProto]], None]:
    def edit(_: onnx.ModelProto, inits: dict[str, onnx.TensorProto]) -> None:
        array = numpy_helper.to_array(inits[name]) * np.float32(factor)
        inits[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))

    return edit


def _classifier(tmp_path: Path) -> Path:
    """A tiny real classifier (mean colour -> 4 softmax scores) with the demo's input contract."""
    weights = numpy_helper.from_array(np.eye(3, 4, dtype=np.float32) * 4, "w")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images", "axes"], ["mean"], keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "classifier",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 192, 192])],
        [helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, [1, 4])],
        initializer=[weights, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    demo = ModelManifest.model_validate_json((DEMO_ONNX / "model.json").read_text())
    manifest = ModelManifest(
        name="colour-classifier",
        version="1.0.0",
        task=Task.classify,
        input=demo.input,
        labels=("red", "green", "blue", "grey"),
        decoder=ClassifierDecoder(top_k=1),
        thresholds=Thresholds(score=0.0),  # top-1 always reported: one result per frame
    )
    return _write_model(tmp_path / "classifier", model, json.loads(manifest.to_json()))


# ---- frames -----------------------------------------------------------------------------


def test_bundled_frames_carry_pixel_ground_truth(frames: list[SelfTestFrame]) -> None:
    coco = json.loads((bundled_selftest_dir() / "labels.json").read_text())
    assert len(frames) == len(coco["images"]) == 16
    first = frames[0]
    assert first.image.dtype == np.uint8 and first.image.ndim == 3 and first.image.shape[2] == 3 and first.annotated
    image_id = next(i["id"] for i in coco["images"] if i["file_name"] == first.name)
    anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    x, y, w, h = anns[0]["bbox"]
    np.testing.assert_allclose(first.boxes[0], [x, y, x + w, y + h], rtol=1e-6)
    assert first.labels == tuple(names[a["category_id"]] for a in anns)
    assert sum(len(f.labels) for f in frames) == len(coco["annotations"])


def test_missing_or_broken_frames_are_named(tmp_path: Path) -> None:
    with pytest.raises(SelfTestError, match=str(tmp_path / "nowhere")) as exc:
        load_frames(tmp_path / "nowhere")
    assert exc.value.reason == "selftest_frames"
    with pytest.raises(SelfTestError, match="holds no images"):
        load_frames(tmp_path)
    folder = tmp_path / "frames"
    shutil.copytree(bundled_selftest_dir(), folder)
    (folder / "scene_03.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(SelfTestError, match=r"scene_03\.jpg cannot be decoded") as exc:
        load_frames(folder)
    assert exc.value.reason == "selftest_frames"
    shutil.copy(bundled_selftest_dir() / "scene_03.jpg", folder / "scene_03.jpg")
    coco = json.loads((folder / "labels.json").read_text())
    coco["annotations"][5]["category_id"] = 99
    (folder / "labels.json").write_text(json.dumps(coco))
    with pytest.raises(SelfTestError, match=r"labels\.json is invalid: annotations\[5\]\.category_id 99"):
        load_frames(folder)
    (folder / "labels.json").write_text("{ truncated")
    with pytest.raises(SelfTestError, match=r"labels\.json is invalid: not JSON"):
        load_frames(folder)


# ---- good models ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_demo_models_pass(variant: str, frames: list[SelfTestFrame], opened: Callable[[Path], Detector]) -> None:
    candidate = opened(demo_model_path(variant))
    current = opened(demo_model_path("tflite-int8"))
    checks = validate_candidate(candidate, current)
    assert checks == ["input_tensor_matches_manifest", "labels_present", "decoder_accepts_outputs", "task_matches_current"]
    report = run_selftest(candidate, frames, reference_latency_ms=50.0)
    assert report.recall is not None and report.recall >= 0.9, report
    assert report.checks == ["finite_outputs", "sane_detections", "recall", "latency"] and report.skipped == {}
    assert report.frames == 16 and report.ground_truth == 48 and 0 < report.latency_p50_ms <= report.latency_limit_ms
    event = json.loads(report.model_dump_json())  # what goes into the MQTT update event
    assert event["model"]["sha256"] == candidate.sha256 and event["latency_limit_ms"] == pytest.approx(80.0)


def test_first_model_and_unlabelled_frames_skip_latency_and_recall(
    tmp_path: Path, frames: list[SelfTestFrame], opened: Callable[[Path], Detector]
) -> None:
    folder = tmp_path / "frames"
    shutil.copytree(bundled_selftest_dir(), folder)
    (folder / "labels.json").unlink()
    bare = load_frames(folder)
    assert len(bare) == 16 and not any(f.annotated for f in bare)
    report = run_selftest(opened(demo_model_path("tflite-int8")), bare, reference_latency_ms=None)
    assert report.recall is None and "labels.json" in report.skipped["recall"]
    assert "no reference latency" in report.skipped["latency"]
    assert report.detections > 0 and report.checks == ["finite_outputs", "sane_detections"]


def test_model_of_other_classes_is_not_judged_on_our_shapes(
    tmp_path: Path, frames: list[SelfTestFrame], opened: Callable[[Path], Detector]
) -> None:
    manifest = json.loads((DEMO_ONNX / "model.json").read_text())
    folder = tmp_path / "customer"
    shutil.copytree(DEMO_ONNX, folder)
    (folder / "model.json").write_text(json.dumps({**manifest, "labels": ["person", "car", "bicycle", "dog"]}))
    report = run_selftest(opened(folder), frames, reference_latency_ms=None)
    assert report.recall is None and "circle" in report.skipped["recall"] and "other classes" in report.skipped["recall"]


def test_classifier_runs_without_recall(tmp_path: Path, frames: list[SelfTestFrame], opened: Callable[[Path], Detector]) -> None:
    classifier = opened(_classifier(tmp_path))
    assert "task_matches_current" in validate_candidate(classifier, classifier)
    report = run_selftest(classifier, frames, reference_latency_ms=None)
    assert report.detections == 16 and "classifier" in report.skipped["recall"]


def test_selftest_on_a_thread_leaves_the_serving_model_alone(
    frames: list[SelfTestFrame], opened: Callable[[Path], Detector]
) -> None:
    """The updater's thread tests the candidate while the pipeline keeps running the old model.

    The reference latency is the serving model's median invoke over the same window (both share the CPU).
    """
    serving = opened(demo_model_path("tflite-int8"))
    candidate = opened(demo_model_path("tflite-fp32"))
    image = frames[0].image
    baseline = [d.model_dump() for d in serving.detect(image)]
    serving_ms: list[float] = []
    references: list[float] = []
    outcome: list[object] = []

    def reference() -> float:
        references.append(statistics.median(list(serving_ms)))
        return references[-1]

    def updater() -> None:
        try:
            validate_candidate(candidate, serving)
            outcome.append(run_selftest(candidate, frames * 4, reference_latency_ms=reference, latency_slack_ms=50.0))
        except Exception as exc:  # noqa: BLE001 - handed to the main thread's assertion
            outcome.append(exc)

    thread = threading.Thread(target=updater)
    thread.start()
    while thread.is_alive() or not serving_ms:
        geo = serving.preprocess(image, PixelFormat.BGR, image.shape[1], image.shape[0])
        t0 = time.perf_counter()
        serving.invoke()
        serving_ms.append((time.perf_counter() - t0) * 1000)
        assert [d.model_dump() for d in serving.decode(geo)] == baseline
    thread.join()
    report = outcome[0]
    assert isinstance(report, SelfTestReport), report
    assert len(serving_ms) > 1 and report.frames == 64 and report.recall is not None and report.recall >= 0.9
    assert references and report.reference_latency_ms == references[0] and "latency" in report.checks


# ---- broken models ----------------------------------------------------------------------


def test_zeroed_class_head_fails_low_recall(
    tmp_path: Path, frames: list[SelfTestFrame], opened: Callable[[Path], Detector]
) -> None:
    candidate = opened(_edited_demo(tmp_path, _scale("head.cls.weight", 0.0)))
    validate_candidate(candidate, None)  # structurally it is a perfectly good detector
    with pytest.raises(SelfTestFailed, match=r"recall 0\.00 at IoU 0\.5 is below 0\.50 \(0 of 48 objects") as exc:
        run_selftest(candidate, frames, reference_latency_ms=None)
    assert exc.value.reason == "low_recall" and exc.value.report.recall == 0.0
    assert str(candidate.path) in str(exc.value)


def test_nan_weights_fail_non_finite(tmp_path: Path, frames: list[SelfTestFrame], opened: Callable[[Path], Detector]) -> None:
    candidate = opened(_edited_demo(tmp_path, _scale("head.cls.bias", float("nan"))))
    validate_candidate(candidate, None)
    with pytest.raises(SelfTestFailed, match=r"scene_00\.jpg: output tensor 'output0' \[1, 8, 576\] holds 2304 NaN/Inf") as exc:
        run_selftest(candidate, frames, reference_latency_ms=None)
    assert exc.value.reason == "non_finite_output"


def _drop_score_sigmoid(model: onnx.ModelProto, _: dict[str, onnx.TensorProto]) -> None:
    node = next(n for n in model.graph.node if n.op_type == "Sigmoid" and n.output[0] == "sigmoid_2")
    node.op_type = "Identity"  # a bad export: class logits instead of probabilities


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop_score_sigmoid, r"scores range .* outside \[0, 1\]"),
        (_scale("head.grid", -1.0), r"box .* is outside the 640x480 frame or has no area"),
    ],
    ids=["logits-as-scores", "boxes-off-frame"],
)
def test_insane_detections(
    edit: Callable[[onnx.ModelProto, dict[str, onnx.TensorProto]], None],
    message: str,
    tmp_path: Path,
    frames: list[SelfTestFrame],
    opened: Callable[[Path], Detector],
) -> None:
    candidate = opened(_edited_demo(tmp_path, edit))
    with pytest.raises(SelfTestFailed, match=message) as exc:
        run_selftest(candidate, frames, reference_latency_ms=None)
    assert exc.value.reason == "insane_detections"


def test_slower_than_reference_fails(frames: list[SelfTestFrame], opened: Callable[[Path], Detector]) -> None:
    candidate = opened(demo_model_path("tflite-int8"))
    with pytest.raises(SelfTestFailed, match=r"median invoke [\d.]+ ms over 16 frames exceeds 0\.00 ms") as exc:
        run_selftest(candidate, frames, reference_latency_ms=0.001, latency_factor=1.0, latency_slack_ms=0.0)
    assert exc.value.reason == "too_slow"
    assert exc.value.report.latency_p50_ms > 0 and exc.value.report.recall is not None  # measured before judging


def test_classifier_cannot_replace_detector(tmp_path: Path, opened: Callable[[Path], Detector]) -> None:
    classifier, detector = opened(_classifier(tmp_path)), opened(demo_model_path("onnx-fp32"))
    expected = r"classifier/model\.onnx .*classify model but the current model demo-shapes-onnx-fp32 1\.0\.0 is a detect model"
    with pytest.raises(SelfTestError, match=expected) as exc:
        validate_candidate(classifier, detector)
    assert exc.value.reason == "validation_failed"
    with pytest.raises(SelfTestError, match=r"detect model but the current model colour-classifier 1\.0\.0 is a classify model"):
        validate_candidate(detector, classifier)


def test_manifest_that_does_not_describe_the_model_fails_validation(tmp_path: Path) -> None:
    folder = tmp_path / "candidate"
    shutil.copytree(DEMO_ONNX, folder)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["input"].update(width=320, height=320)
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(SelfTestError, match=r"candidate model .*candidate.* cannot be loaded: .*320x320.*has shape") as exc:
        load_candidate(folder)
    assert exc.value.reason == "validation_failed"


def test_gray_frame_that_does_not_decode_fails_validation(tmp_path: Path) -> None:
    """A model with a dynamic input runs at the manifest's size; at the wrong size its output does not decode."""

    def dynamic_input(model: onnx.ModelProto, _: dict[str, onnx.TensorProto]) -> None:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        for out in model.graph.output:
            out.type.tensor_type.shape.dim[2].dim_param = "anchors"

    folder = _edited_demo(tmp_path, dynamic_input)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["input"].update(width=384, height=384)
    (folder / "model.json").write_text(json.dumps(manifest))
    detector = load_detector(folder, BackendOptions(threads=1))
    try:
        with pytest.raises(SelfTestError, match=r"edited/model\.onnx .*gray frame does not run through model and yolov8") as exc:
            validate_candidate(detector, None)
        assert exc.value.reason == "validation_failed"
    finally:
        detector.close()
