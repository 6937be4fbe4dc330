"""The ``synthetic`` source: moving shapes with known ground truth, on the source's own clock.

Needs no camera, so it drives demos, benchmarks and end-to-end tests. It behaves like a
camera: frames are produced at ``fps`` on a monotonic schedule and, when inference is
slower, the :class:`~agent.sources.base.LiveReader` drops the stale ones. Frames are drawn
into a few recycled :class:`~agent.sources.base.FramePool` buffers, so the steady state
allocates no frame-sized array. With ``replay`` a few frames are drawn up front and handed
out again and again as read-only arrays, the way a camera hands out its DMA buffers: the
source then costs next to no CPU, which is what a benchmark of the pipeline needs.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np
from pydantic import Field

from agent.errors import SourceEnded
from agent.sources.base import DeadlinePacer, Frame, FramePool, FrameSource, PixelFormat, SourceConfigBase, now_stamps
from agent.sources.scenes import GroundTruth, MovingScene

log = logging.getLogger(__name__)


class SyntheticConfig(SourceConfigBase):
    """Settings of the ``synthetic`` source."""

    type: Literal["synthetic"] = Field("synthetic", description="Selects the synthetic source.")
    width: int = Field(640, ge=32, le=4096, description="Frame width in pixels.")
    height: int = Field(480, ge=32, le=4096, description="Frame height in pixels.")
    fps: float = Field(
        15.0, ge=0.0, le=10000.0, description="Frames per second on the source's own clock; 0 = as fast as possible."
    )
    objects: int = Field(4, ge=0, le=32, description="How many moving shapes each frame shows (fewer if they don't fit).")
    # numpy's generators take non-negative seeds only: refused here, at `check`, instead of crashing `run`
    seed: int = Field(
        0, ge=0, le=2**63 - 1, description="Random seed (0 or more): the same seed gives the same background and motion."
    )
    speed: float = Field(3.0, ge=0.0, le=100.0, description="How far shapes move per frame, in pixels.")
    frames: int | None = Field(None, ge=1, description="Stop after this many frames; unset = run forever.")
    replay: int = Field(
        0,
        ge=0,
        le=256,
        description="0 = draw every frame live; N = draw N frames once and replay them in a loop, handed out "
        "read-only without a copy (like a camera's DMA buffer: benchmarks use it so the source costs no CPU).",
    )
    buffers: int = Field(
        4, ge=2, le=16, description="Recycled frame buffers (one being drawn, one waiting, one in inference, spare)."
    )


class SyntheticSource(FrameSource):
    """Renders a :class:`MovingScene` into pool buffers; ground truth rides on each frame."""

    type_key = "synthetic"
    config_model = SyntheticConfig
    config: SyntheticConfig

    def __init__(self, config: SyntheticConfig) -> None:
        super().__init__(config)
        self._scene: MovingScene | None = None
        self._pool: FramePool | None = None
        self._pacer = DeadlinePacer(config.fps)
        self._produced = 0
        self._reel: list[tuple[np.ndarray, list[GroundTruth]]] = []

    @property
    def live(self) -> bool:
        return True

    def open(self) -> None:
        cfg = self.config
        if self._scene is None:  # a reopen keeps the scene moving where it was
            self._scene = MovingScene(cfg.width, cfg.height, seed=cfg.seed, objects=cfg.objects, speed=cfg.speed)
            self._pool = FramePool((cfg.height, cfg.width, 3), count=cfg.buffers)
            for _ in range(cfg.replay):  # drawn once, up front; replayed as read-only views, no copy
                image = np.empty((cfg.height, cfg.width, 3), np.uint8)
                truths = self._scene.render(image)
                image.flags.writeable = False  # a consumer writing into a frame is a bug; make it loud
                self._reel.append((image, truths))
        self._pacer.reset()

    def read(self) -> Frame:
        if self._scene is None or self._pool is None:
            raise RuntimeError(f"synthetic source {self.config.id!r} read before open()")
        limit = self.config.frames
        while True:
            if limit is not None and self._produced >= limit:
                raise SourceEnded(f"synthetic source {self.config.id!r} produced its {limit} frames")
            self.stats.frames_dropped += self._pacer.wait()  # ticks missed while we were late
            if self._reel:
                buf, release = None, None  # replayed frames are shared read-only: no buffer to hold
                break
            buf = self._pool.acquire()
            if buf is not None:
                release = self._pool.release_fn(buf)
                break
            # Every buffer is still held downstream: like a starved camera, this tick is lost.
            self.stats.frames_dropped += 1
            if not self._pacer.period_ns:
                time.sleep(0.001)  # unpaced: don't spin while waiting for a buffer
        stamps = now_stamps()  # the "exposure" moment; drawing time counts as capture latency
        if buf is None:
            image, truths = self._reel[self._produced % len(self._reel)]
        else:
            image, truths = buf, self._scene.render(buf)  # draws in place: no frame-sized allocation
        self._produced += 1
        return Frame(
            image=image,
            pixel_format=PixelFormat.BGR,
            frame_id=self.next_frame_id(),
            source_id=self.config.id,
            capture_monotonic_ns=stamps[0],
            capture_wall_time=stamps[1],
            width=self.config.width,
            height=self.config.height,
            ground_truth=truths,
            _release=release,
        )

    def close(self) -> None:
        self._pacer.reset()
