"""The candidate self-test: load the new model beside the old one, check it, then run golden frames.

Triton and DeepStream keep the old model serving while a new one loads and is validated
(anchors-ota.md §0.5, §9); "it loaded" is a weak health signal (§0.6), so a candidate must also
run the bundled held-out frames: outputs finite, detections sane, the known objects found, and
not much slower than the model it replaces. Everything here runs on the updater's thread with the
candidate's own backend; the serving pipeline and its detector are never touched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from agent.backends.base import BackendOptions
from agent.decoders.base import DecodedOutput
from agent.decoders.nms import iou as box_iou
from agent.demo import selftest_dir
from agent.detector import Detector, load_detector
from agent.errors import AgentError
from agent.manifest import Task
from agent.ota.errors import SelfTestError
from agent.schema import Detection, ModelRef
from agent.sources.base import PixelFormat

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
GROUND_TRUTH_FILE = "labels.json"
BOX_TOLERANCE_PX = 1.0  # rounding in the letterbox inverse may push an edge box one pixel out


@dataclass(frozen=True, slots=True)
class SelfTestFrame:
    """One golden frame and what is in it."""

    name: str
    image: np.ndarray  # (H, W, 3) BGR uint8
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in pixels of ``image``
    labels: tuple[str, ...]  # one class name per box
    annotated: bool  # False: no ground truth for this frame (not "nothing in it")


class SelfTestReport(BaseModel):
    """What the self-test measured; goes into the ``update`` MQTT event as JSON."""

    model: ModelRef
    frames: int
    detections: int = Field(description="Detections over all frames.")
    ground_truth: int = Field(0, description="Ground-truth objects over the annotated frames.")
    matched: int = Field(0, description="Ground-truth objects found at the IoU threshold.")
    recall: float | None = None
    min_recall: float | None = None
    latency_p50_ms: float = Field(description="Median invoke time of the candidate (model only).")
    latency_limit_ms: float | None = None
    reference_latency_ms: float | None = None
    duration_ms: float = Field(0.0, description="Wall time of the whole self-test.")
    checks: list[str] = Field(default_factory=list, description="Checks that passed.")
    skipped: dict[str, str] = Field(default_factory=dict, description="Check -> why it did not apply.")


class SelfTestFailed(SelfTestError):
    """A self-test check failed; ``report`` holds what was measured up to the failure."""

    def __init__(self, message: str, reason: str, report: SelfTestReport) -> None:
        super().__init__(message, reason=reason)
        self.report = report


# ---- frames -----------------------------------------------------------------------------


def bundled_selftest_dir() -> Path:
    """The self-test frames shipped with the agent (checkout ``models/demo/selftest`` or the wheel's copy)."""
    try:
        path = selftest_dir()
    except AgentError as exc:
        raise SelfTestError(f"bundled self-test frames not found: {exc}", reason="selftest_frames") from None
    if not path.is_dir():
        raise SelfTestError(f"bundled self-test frames folder {path} is missing; reinstall edge-agent", reason="selftest_frames")
    return path


def load_frames(directory: Path) -> list[SelfTestFrame]:
    """Images of ``directory`` (sorted by name) with ground truth from its COCO ``labels.json`` if present."""
    import cv2

    if not directory.is_dir():
        raise SelfTestError(f"self-test frames folder {directory} does not exist", reason="selftest_frames")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise SelfTestError(
            f"self-test frames folder {directory} holds no images ({', '.join(IMAGE_SUFFIXES)})", reason="selftest_frames"
        )
    truth_file = directory / GROUND_TRUTH_FILE
    truth = _read_coco(truth_file) if truth_file.exists() else {}
    missing = sorted(set(truth) - {p.name for p in paths})
    if missing:
        raise SelfTestError(
            f"{truth_file} lists images that are not in {directory}: {', '.join(missing)}", reason="selftest_frames"
        )
    frames = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SelfTestError(f"self-test frame {path} cannot be decoded (corrupt or not an image)", reason="selftest_frames")
        entry = truth.get(path.name)
        if entry is None:
            frames.append(SelfTestFrame(path.name, image, np.zeros((0, 4), np.float32), (), annotated=False))
            continue
        (width, height), boxes, labels = entry
        if (image.shape[1], image.shape[0]) != (width, height):
            raise SelfTestError(
                f"{path} is {image.shape[1]}x{image.shape[0]} but {truth_file} says {width}x{height}: "
                "the image was changed after labelling",
                reason="selftest_frames",
            )
        frames.append(SelfTestFrame(path.name, image, boxes, labels, annotated=True))
    return frames


_Truth = tuple[tuple[int, int], np.ndarray, tuple[str, ...]]


def _read_coco(path: Path) -> dict[str, _Truth]:
    """``file_name -> ((width, height), boxes x1y1x2y2, labels)`` from a COCO detection file."""

    def bad(what: str) -> SelfTestError:
        return SelfTestError(f"self-test ground truth {path} is invalid: {what}", reason="selftest_frames")

    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise SelfTestError(f"cannot read {path}: {exc.strerror}", reason="selftest_frames") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise bad("top level must be an object with images, annotations, categories")

    def entries(key: str) -> list[dict[str, Any]]:
        value = data.get(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad(f"{key!r} must be a list of objects")
        return value

    try:
        names = {int(c["id"]): str(c["name"]) for c in entries("categories")}
        images = {int(i["id"]): (str(i["file_name"]), int(i["width"]), int(i["height"])) for i in entries("images")}
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"a category or image entry lacks or mistypes {exc}") from None
    rows: dict[int, list[tuple[list[float], str]]] = {image_id: [] for image_id in images}
    for n, ann in enumerate(entries("annotations")):
        where = f"annotations[{n}]"
        image_id, category, bbox = ann.get("image_id"), ann.get("category_id"), ann.get("bbox")
        if image_id not in images:
            raise bad(f"{where}.image_id {image_id!r} is not an image id")
        if category not in names:
            raise bad(f"{where}.category_id {category!r} is not a category id ({sorted(names)})")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise bad(f"{where}.bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            raise bad(f"{where}.bbox has width/height {w}x{h}; both must be > 0")
        rows[image_id].append(([x, y, x + w, y + h], names[category]))
    out: dict[str, _Truth] = {}
    for image_id, (file_name, width, height) in images.items():
        boxes = np.array([r[0] for r in rows[image_id]], np.float32).reshape(-1, 4)
        out[file_name] = ((width, height), boxes, tuple(r[1] for r in rows[image_id]))
    return out


# ---- structural validation --------------------------------------------------------------


def load_candidate(path: Path, options: BackendOptions | None = None, *, verify_sha256: bool = True) -> Detector:
    """Load a candidate model beside the serving one; any load refusal becomes ``validation_failed``.

    Pass the pipeline's ``BackendOptions`` so the latency check compares like with like.
    """
    try:
        return load_detector(path, options, verify_sha256=verify_sha256)
    except AgentError as exc:
        raise SelfTestError(f"candidate model {path} cannot be loaded: {exc}", reason="validation_failed") from None


def validate_candidate(candidate: Detector, current: Detector | None) -> list[str]:
    """Structural checks before any judged inference; returns the names of the checks that passed.

    Raises SelfTestError(reason="validation_failed") naming the model file and what is wrong.
    """
    where = f"candidate model {candidate.path} ({candidate.manifest_origin})"
    manifest, tensor = candidate.manifest, candidate.backend.input

    def fail(what: str) -> SelfTestError:
        return SelfTestError(f"{where}: {what}", reason="validation_failed")

    passed = []
    expected = manifest.input.tensor_shape()
    buffer = candidate.backend.input_array()
    buffer_shape, buffer_dtype = tuple(buffer.shape), buffer.dtype
    del buffer  # LiteRT refuses to invoke while a view of its tensors is alive
    if tuple(tensor.shape) != expected or buffer_shape != expected:
        raise fail(
            f"the manifest input {manifest.input.width}x{manifest.input.height} {manifest.input.layout.value} "
            f"means shape {list(expected)} but the model input {tensor.name!r} is {list(tensor.shape)}"
        )
    if tensor.dtype != np.dtype(manifest.input.dtype.value) or buffer_dtype != tensor.dtype:
        raise fail(f"the manifest input dtype {manifest.input.dtype.value} does not match the model input ({tensor.dtype})")
    passed.append("input_tensor_matches_manifest")

    if not manifest.labels or any(not label.strip() for label in manifest.labels):
        raise fail(f"labels must be non-empty names, got {list(manifest.labels)[:8]}")
    passed.append("labels_present")

    gray = np.full((manifest.input.height, manifest.input.width, 3), manifest.input.pad_value, np.uint8)
    try:
        candidate.preprocess(gray, PixelFormat.BGR, gray.shape[1], gray.shape[0])
        candidate.invoke()
        produced = [tuple(a.shape) for a in candidate.backend.output_arrays()]
        for info, shape in zip(candidate.backend.outputs, produced, strict=True):
            if all(d > 0 for d in info.shape) and shape != tuple(info.shape):
                raise fail(f"output {info.name!r} came out as {list(shape)}, declared {list(info.shape)}")
        candidate.decode_raw()
    except SelfTestError:
        raise
    except Exception as exc:  # noqa: BLE001 - runtimes and decoders raise many types; all mean "unusable"
        raise fail(
            f"a gray frame does not run through model and {manifest.decoder.type} decoder: {type(exc).__name__}: {exc}"
        ) from None
    passed.append("decoder_accepts_outputs")

    if current is not None:
        if candidate.task is not current.task:
            raise fail(
                f"it is a {candidate.task.value} model but the current model {current.ref.name} "
                f"{current.ref.version} is a {current.task.value} model; publish it under another model name"
            )
        passed.append("task_matches_current")
    return passed


# ---- golden-frame run -------------------------------------------------------------------

_Fail = Callable[[str, str], SelfTestFailed]

_HINTS = {
    "non_finite_output": "Re-export or re-quantize the model; its weights or calibration produce NaN/Inf.",
    "insane_detections": "Check the manifest's decoder type and options against how the model was exported.",
    "low_recall": "Check the conversion, the quantization calibration and the manifest's input normalization.",
    "too_slow": "Publish a lighter model, or raise the self-test latency factor if the slowdown is intended.",
}


def run_selftest(
    candidate: Detector,
    frames: list[SelfTestFrame],
    *,
    reference_latency_ms: float | Callable[[], float | None] | None,
    latency_factor: float = 1.5,
    latency_slack_ms: float = 5.0,
    min_recall: float = 0.5,
    iou: float = 0.5,
    warmup: int = 2,
    pace_s: float = 0.0,
) -> SelfTestReport:
    """Run every frame through the candidate and judge outputs, detections, recall and latency.

    ``reference_latency_ms`` is the serving model's median invoke time, or a function returning it
    that is called after the frames ran: the serving model's own median over the self-test window
    shares the CPU with the candidate just as the candidate shares it with the pipeline, so the
    comparison stays fair on a loaded Pi. Load the candidate with the pipeline's thread count.

    Raises SelfTestFailed (a SelfTestError) with reason ``non_finite_output``, ``insane_detections``,
    ``inference_failed``, ``low_recall`` or ``too_slow`` and the numbers in the message.
    """
    if not frames:
        raise SelfTestError("no self-test frames to run the candidate on", reason="selftest_frames")
    started = time.perf_counter()
    where = f"candidate model {candidate.path}"
    report = SelfTestReport(model=candidate.ref, frames=len(frames), detections=0, latency_p50_ms=0.0)

    def fail(reason: str, what: str) -> SelfTestFailed:
        report.duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
        hint = _HINTS.get(reason, "")
        return SelfTestFailed(f"{where}: {what}. {hint}".rstrip(), reason, report)

    invoke_ms: list[float] = []
    results: list[list[Detection]] = []
    for n, frame in enumerate(frames):
        height, width = frame.image.shape[:2]
        try:
            geo = candidate.preprocess(frame.image, PixelFormat.BGR, width, height)
            for _ in range(warmup if n == 0 else 0):  # first invokes pay for allocation and caches
                candidate.invoke()
            if pace_s > 0:
                # paced like the camera: a thread that wakes per frame is timed as the serving model is, not as a
                # busy loop competing for every core (which made identical models look 8x slower on a loaded CPU)
                time.sleep(pace_s)
            t0 = time.perf_counter_ns()
            candidate.invoke()
            invoke_ms.append((time.perf_counter_ns() - t0) / 1e6)
            _check_finite(candidate, frame, candidate.backend.output_arrays(), fail)
            raw = candidate.decode_raw()
        except SelfTestError:
            raise
        except Exception as exc:  # noqa: BLE001 - a runtime error on a frame rejects the candidate, not the updater
            raise fail("inference_failed", f"frame {frame.name}: {type(exc).__name__}: {exc}") from None
        _check_finite(candidate, frame, [a for a in (raw.boxes, raw.scores) if a is not None], fail, decoded=True)
        detections = candidate.to_detections(raw, geo)
        _check_sane(candidate, frame, raw, detections, fail)
        results.append(detections)
        report.detections += len(detections)
    report.checks += ["finite_outputs", "sane_detections"]
    report.latency_p50_ms = round(float(np.median(invoke_ms)), 3)

    _judge_recall(candidate, frames, results, report, min_recall, iou)
    if report.recall is not None and report.recall < min_recall:
        raise fail(
            "low_recall",
            f"recall {report.recall:.2f} at IoU {iou} is below {min_recall:.2f} "
            f"({report.matched} of {report.ground_truth} objects found in {len(frames)} frames, "
            f"{report.detections} detections)",
        )

    reference = reference_latency_ms() if callable(reference_latency_ms) else reference_latency_ms
    report.reference_latency_ms = reference
    if reference is None:
        report.skipped["latency"] = "no reference latency (no model has run on this device yet)"
    else:
        limit = reference * latency_factor + latency_slack_ms
        report.latency_limit_ms = round(limit, 3)
        if report.latency_p50_ms > limit:
            raise fail(
                "too_slow",
                f"median invoke {report.latency_p50_ms:.2f} ms over {len(invoke_ms)} frames exceeds "
                f"{limit:.2f} ms (current model {reference:.2f} ms x {latency_factor} "
                f"+ {latency_slack_ms} ms)",
            )
        report.checks.append("latency")
    report.duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
    return report


def _check_finite(
    candidate: Detector, frame: SelfTestFrame, arrays: list[np.ndarray], fail: _Fail, decoded: bool = False
) -> None:
    names = ["boxes", "scores"] if decoded else [o.name for o in candidate.backend.outputs]
    for name, array in zip(names, arrays, strict=False):
        if array.dtype.kind != "f":
            continue  # quantized integer outputs are always finite
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            kind = "decoded" if decoded else "output tensor"
            raise fail(
                "non_finite_output",
                f"frame {frame.name}: {kind} {name!r} {list(array.shape)} holds {bad} NaN/Inf values of {array.size}",
            )


def _check_sane(candidate: Detector, frame: SelfTestFrame, raw: DecodedOutput, detections: list[Detection], fail: _Fail) -> None:
    height, width = frame.image.shape[:2]
    limit = candidate.decoder.thresholds.max_detections
    if len(detections) > limit:
        raise fail("insane_detections", f"frame {frame.name}: {len(detections)} detections, max_detections is {limit}")
    if raw.scores.size and (float(raw.scores.min()) < 0.0 or float(raw.scores.max()) > 1.0):
        raise fail(
            "insane_detections",
            f"frame {frame.name}: scores range {float(raw.scores.min()):.3f}..{float(raw.scores.max()):.3f}, outside [0, 1]",
        )
    if raw.boxes is not None and raw.boxes.size:
        # Half a model-input pixel of slack: the corners come out of float (or dequantized) arithmetic.
        slack = 0.5 / max(candidate.manifest.input.width, candidate.manifest.input.height)
        b = raw.boxes
        inverted = np.flatnonzero((b[:, 2] < b[:, 0] - slack) | (b[:, 3] < b[:, 1] - slack))
        if inverted.size:
            raise fail(
                "insane_detections",
                f"frame {frame.name}: {inverted.size} boxes have x2 < x1 or y2 < y1 "
                f"(e.g. {np.round(b[inverted[0]], 3).tolist()} in 0..1 of the input)",
            )
    known = len(candidate.labels)
    for det in detections:
        if not 0 <= det.class_id < known:
            raise fail("insane_detections", f"frame {frame.name}: class id {det.class_id} but the model has {known} labels")
        box, tol = det.box, BOX_TOLERANCE_PX
        if box is None:
            continue
        # Boxes are clipped to the frame (YOLO boxes may overhang an edge object): one left with no
        # area lay wholly outside the frame, which no real object does.
        if not (-tol <= box.x1 < box.x2 <= width + tol and -tol <= box.y1 < box.y2 <= height + tol):
            raise fail(
                "insane_detections",
                f"frame {frame.name}: {det.label} box ({box.x1:.1f}, {box.y1:.1f}, "
                f"{box.x2:.1f}, {box.y2:.1f}) is outside the {width}x{height} frame or has no area",
            )


def _judge_recall(
    candidate: Detector,
    frames: list[SelfTestFrame],
    results: list[list[Detection]],
    report: SelfTestReport,
    min_recall: float,
    iou: float,
) -> None:
    annotated = [(f, d) for f, d in zip(frames, results, strict=True) if f.annotated]
    truth_labels = {label for f, _ in annotated for label in f.labels}
    missing = sorted(truth_labels - set(candidate.labels))
    if candidate.task is Task.classify:
        report.skipped["recall"] = "classifier: no boxes to match against the ground truth"
    elif not annotated:
        report.skipped["recall"] = f"the self-test frames have no ground truth ({GROUND_TRUTH_FILE} absent)"
    elif not truth_labels:
        report.skipped["recall"] = "the annotated self-test frames hold no objects"
    elif missing:
        report.skipped["recall"] = (
            f"the model has no label for {', '.join(missing)} of the self-test frames; "
            "a model of other classes is not judged on them"
        )
    if "recall" in report.skipped:
        return
    for frame, detections in annotated:
        report.ground_truth += len(frame.labels)
        report.matched += _matches(frame, detections, iou)
    report.recall = round(report.matched / report.ground_truth, 4)
    report.min_recall = min_recall
    if report.recall >= min_recall:
        report.checks.append("recall")


def _matches(frame: SelfTestFrame, detections: list[Detection], threshold: float) -> int:
    """Ground-truth boxes found by a same-label detection at IoU >= threshold (each detection used once)."""
    taken = np.zeros(len(frame.labels), bool)
    for det in sorted(detections, key=lambda d: -d.score):
        if det.box is None:
            continue
        candidates = [i for i, label in enumerate(frame.labels) if label == det.label and not taken[i]]
        if not candidates:
            continue
        overlaps = box_iou(np.array([det.box.x1, det.box.y1, det.box.x2, det.box.y2]), frame.boxes[candidates])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= threshold:
            taken[candidates[best]] = True
    return int(taken.sum())
