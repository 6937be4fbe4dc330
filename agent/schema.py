"""The one result schema that crosses every boundary: decoder -> pipeline -> sinks -> MQTT."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

RESULT_SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Box(_Model):
    """Corners (x1, y1) top-left and (x2, y2) bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float


class Detection(_Model):
    class_id: int = Field(description="Index into the model's labels.")
    label: str = Field(description="Class name from the manifest.")
    score: float = Field(ge=0.0, le=1.0)
    box: Box | None = Field(None, description="In source-frame pixels. None for classifiers.")
    box_normalized: Box | None = Field(None, description="In 0..1 of the source frame. None for classifiers.")


class ModelRef(_Model):
    name: str
    version: str
    sha256: str | None = None


class StageTimings(_Model):
    """Milliseconds spent in each stage of this frame."""

    wait_ms: float = Field(description="Waiting for a frame (source slower than inference, or reading it).")
    preprocess_ms: float = Field(description="Resize/convert/normalize into the input tensor.")
    invoke_ms: float = Field(description="The model itself.")
    decode_ms: float = Field(description="Output decoding, thresholding, NMS, box mapping.")
    capture_to_result_ms: float = Field(description="From the capture timestamp to the result being ready.")


class DetectionResult(_Model):
    """Exactly one per processed frame."""

    schema_version: int = RESULT_SCHEMA_VERSION
    frame_id: int
    source_id: str
    capture_monotonic_ns: int = Field(description="CLOCK_MONOTONIC at capture, in ns (this boot only).")
    capture_time: float = Field(description="Wall-clock capture time, Unix seconds.")
    frame_width: int
    frame_height: int
    model: ModelRef
    task: str = "detect"
    detections: list[Detection]
    timings: StageTimings


def still_image_result(
    *,
    frame_id: int,
    source_id: str,
    image_size: tuple[int, int],
    model: ModelRef,
    task: str,
    detections: list[Detection],
    captured: tuple[int, float],
    stage_ns: tuple[int, int, int, int],
) -> DetectionResult:
    """The result for an image no source captured (a file, an upload): nothing was waited for.

    ``image_size`` is (width, height); ``captured`` is (monotonic ns, wall time) when the image
    arrived; ``stage_ns`` are ``perf_counter_ns()`` stamps before preprocess, after preprocess,
    after invoke and after decode.
    """
    t0, t1, t2, t3 = stage_ns
    return DetectionResult(
        frame_id=frame_id,
        source_id=source_id,
        capture_monotonic_ns=captured[0],
        capture_time=captured[1],
        frame_width=image_size[0],
        frame_height=image_size[1],
        model=model,
        task=task,
        detections=detections,
        timings=StageTimings(
            wait_ms=0.0,
            preprocess_ms=(t1 - t0) / 1e6,
            invoke_ms=(t2 - t1) / 1e6,
            decode_ms=(t3 - t2) / 1e6,
            capture_to_result_ms=(time.monotonic_ns() - captured[0]) / 1e6,
        ),
    )
