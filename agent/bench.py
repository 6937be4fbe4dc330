"""``edge-agent bench``: what the pipeline costs on top of the model, measured in one run.

For each backend x demo variant, with the same thread count:

- ``raw_fps``: ``invoke()`` in a tight loop, nothing else (the limit);
- ``pipeline_fps``: the real pipeline on a synthetic 640x480 camera running at twice the
  raw rate (so the source is never the bottleneck);
- ``naive_fps``: the loop most tutorials show (resize -> colour convert -> normalize ->
  expand_dims -> set_tensor / run -> get_tensor -> decode), same decoder;
- per-stage p50/p95, ``overhead_ms_p50`` (everything but invoke, per frame), and
  ``alloc_bytes_per_frame`` (median of the largest Python/numpy allocation growth inside
  one steady-state frame, from tracemalloc, capture thread included).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from agent.backends.base import BackendOptions, default_threads
from agent.backends.litert import LiteRTBackend
from agent.backends.onnxruntime import OnnxRuntimeBackend
from agent.demo import VARIANTS, demo_model_path
from agent.detector import Detector, load_detector
from agent.manifest import Layout
from agent.pipeline import Pipeline
from agent.sources.base import PixelFormat
from agent.sources.scenes import MovingScene
from agent.sources.synthetic import SyntheticConfig, SyntheticSource

WARMUP = 20
SOURCE_SPEEDUP = 1.5  # the synthetic camera runs this much faster than the raw model rate
FRAME_W, FRAME_H = 640, 480


def _raw_fps(detector: Detector, frames: int) -> float:
    for _ in range(WARMUP):
        detector.invoke()
    start = time.perf_counter()
    for _ in range(frames):
        detector.invoke()
    return frames / (time.perf_counter() - start)


def _pipeline(detector: Detector, frames: int, source_fps: float, trace: bool) -> tuple[float, Pipeline, list[int]]:
    cfg = SyntheticConfig(id="bench", width=FRAME_W, height=FRAME_H, fps=source_fps, seed=7, replay=32)
    source = SyntheticSource(cfg)
    pipeline = Pipeline(detector, source, [], max_frames=WARMUP + frames)
    stamps: list[float] = []
    allocs: list[int] = []
    baseline = [0]

    def on_frame(_result: Any) -> None:
        stamps.append(time.perf_counter())
        if trace:
            current, peak = tracemalloc.get_traced_memory()
            allocs.append(peak - baseline[0])
            tracemalloc.reset_peak()
            baseline[0] = current

    pipeline.frame_hooks.append(on_frame)
    if trace:
        tracemalloc.start()
    try:
        pipeline.run()
    finally:
        if trace:
            tracemalloc.stop()
    steady = stamps[WARMUP:]
    fps = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    return fps, pipeline, allocs[WARMUP:]


def _naive_fps(detector: Detector, frames: int) -> float:
    """The tutorial loop: fresh arrays every frame, copies in and out of the runtime."""
    spec = detector.manifest.input
    scene = MovingScene(FRAME_W, FRAME_H, seed=7)
    pool = [np.empty((FRAME_H, FRAME_W, 3), np.uint8) for _ in range(8)]
    for buf in pool:
        scene.render(buf)
    backend = detector.backend
    mean = np.asarray(spec.normalization.mean, np.float32)
    std = np.asarray(spec.normalization.std, np.float32)
    if isinstance(backend, LiteRTBackend):
        interp = backend._interp  # the same interpreter, driven the copying way
        in_idx = interp.get_input_details()[0]["index"]
        out_idx = [d["index"] for d in interp.get_output_details()]

        def run(x: np.ndarray) -> list[np.ndarray]:
            interp.set_tensor(in_idx, x)
            interp.invoke()
            return [interp.get_tensor(i) for i in out_idx]
    else:
        assert isinstance(backend, OnnxRuntimeBackend)
        sess = backend._sess
        name = sess.get_inputs()[0].name

        def run(x: np.ndarray) -> list[np.ndarray]:
            return sess.run(None, {name: x})

    tensor = backend.input

    def one(i: int) -> None:
        frame = pool[i % len(pool)]
        resized = cv2.resize(frame, (spec.width, spec.height))  # stretch, as most tutorials do
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        if tensor.dtype == np.float32:
            x = (rgb.astype(np.float32) - mean) / std
        elif tensor.scale:
            x = np.clip(np.round(((rgb.astype(np.float32) - mean) / std) / tensor.scale + tensor.zero_point), -128, 255)
            x = x.astype(tensor.dtype)
        else:
            x = rgb.astype(tensor.dtype)
        if spec.layout is Layout.NCHW:
            x = x.transpose(2, 0, 1)
        x = np.expand_dims(np.ascontiguousarray(x), 0)
        outputs = run(x)
        detector.decoder.decode(outputs)

    for i in range(WARMUP):
        one(i)
    start = time.perf_counter()
    for i in range(frames):
        one(i)
    return frames / (time.perf_counter() - start)


def bench_variant(variant: str, backend: str, threads: int, frames: int, rounds: int = 3) -> dict[str, Any]:
    """Raw, pipeline and naive rates measured in interleaved rounds; the medians are reported.

    Interleaving matters on shared machines: a noisy neighbour slows all three alike
    instead of skewing one of them.
    """
    detector = load_detector(demo_model_path(variant), BackendOptions(threads=threads), backend)
    raws, pipes, naives = [], [], []
    try:
        # warm the preprocessor/decoder once so one-time buffer setup is not counted as per-frame work
        detector.detect(np.zeros((FRAME_H, FRAME_W, 3), np.uint8), PixelFormat.BGR)
        for _ in range(rounds):
            raws.append(_raw_fps(detector, frames))
            # a camera faster than the model: inference, not the source, must be the limit
            fps, pipeline, _ = _pipeline(detector, frames, source_fps=SOURCE_SPEEDUP * raws[-1], trace=False)
            pipes.append(fps)
            naives.append(_naive_fps(detector, frames))
        _, _, allocs = _pipeline(detector, max(50, frames // 4), source_fps=SOURCE_SPEEDUP * raws[-1], trace=True)
    finally:
        detector.close()
    raw, pipe_fps, naive = statistics.median(raws), statistics.median(pipes), statistics.median(naives)
    lat = pipeline.stats.latency
    row: dict[str, Any] = {
        "backend": backend,
        "model": variant,
        "threads": threads,
        "raw_fps": round(raw, 1),
        "pipeline_fps": round(pipe_fps, 1),
        "naive_fps": round(naive, 1),
        "pipeline_vs_raw": round(pipe_fps / raw, 3),
        "pipeline_vs_naive": round(pipe_fps / naive, 3),
        "overhead_ms_p50": round(lat["overhead"].percentile(50) or 0.0, 3),
        "alloc_bytes_per_frame": int(statistics.median(allocs)) if allocs else None,
        "frames_dropped_at_source": pipeline.source.stats.frames_dropped,
    }
    for stage in ("preprocess", "invoke", "decode", "sink", "capture_to_result"):
        row[f"{stage}_ms_p50"] = round(lat[stage].percentile(50) or 0.0, 3)
        row[f"{stage}_ms_p95"] = round(lat[stage].percentile(95) or 0.0, 3)
    return row


def run_benchmark(json_path: Path | None = None, frames: int = 300, threads: int | None = None) -> int:
    threads = threads or default_threads()
    console = Console()
    plan = [(v, "litert" if v.startswith("tflite") else "onnxruntime") for v in VARIANTS]
    rows = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=len(plan))
        for variant, backend in plan:
            progress.update(task, description=f"{backend} {variant}")
            rows.append(bench_variant(variant, backend, threads, frames))
            progress.advance(task)
    table = Table(title=f"edge-agent bench · {platform.machine()} · {threads} thread(s) · {frames} frames")
    columns = (
        "backend",
        "model",
        "raw_fps",
        "pipeline_fps",
        "naive_fps",
        "pipeline_vs_raw",
        "overhead_ms_p50",
        "preprocess_ms_p50",
        "decode_ms_p50",
        "alloc_bytes_per_frame",
    )
    for col in columns:
        table.add_column(col, justify="left" if col in ("backend", "model") else "right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps({"machine": platform.machine(), "threads": threads, "rows": rows}, indent=2))
        console.print(f"wrote {json_path}")
    return 0
