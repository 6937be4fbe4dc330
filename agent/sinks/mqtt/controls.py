"""What remote commands do to the running agent: thresholds, publish policy, snapshots, reload, updates.

Runs on the command worker thread, never on paho's. The only work that touches the
pipeline thread is the snapshot hand-off: the pipeline copies the next frame (only when a
snapshot was asked for) and calls back; drawing and JPEG encoding happen back on the worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.schema import DetectionResult
from agent.sinks.mqtt.commands import CommandFailed, Done, Outcome, SetThresholdArgs, SnapshotArgs, merged_thresholds
from agent.sinks.mqtt.config import CommandsConfig, MqttSinkConfig

if TYPE_CHECKING:
    from agent.pipeline import Pipeline
    from agent.sinks.base import AgentContext

log = logging.getLogger(__name__)

MAX_PENDING_SNAPSHOTS = 4
UpdateChecker = Callable[[], Outcome]


@dataclass
class _PendingSnapshot:
    deadline: float
    args: SnapshotArgs
    done: Done


class AgentControls:
    """Implements :class:`~agent.sinks.mqtt.commands.Controls` over a running pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        context: AgentContext,
        cfg: CommandsConfig,
        *,
        run_later: Callable[[Callable[[], None]], bool],
        publish_jpeg: Callable[[bytes], bool],
        apply_live_config: Callable[[MqttSinkConfig | None], Outcome],
        get_policy: Callable[[], str],
        set_policy: Callable[[str], None],
        on_config_reloaded: Callable[[str | None], None],
    ) -> None:
        self.pipeline = pipeline
        self.context = context
        self.cfg = cfg
        self.update_checker: UpdateChecker | None = None
        self._run_later = run_later
        self._publish_jpeg = publish_jpeg
        self._apply_live_config = apply_live_config
        self._get_policy = get_policy
        self._set_policy = set_policy
        self._on_config_reloaded = on_config_reloaded
        self._pending: dict[int, _PendingSnapshot] = {}
        self._next_token = 0
        self._lock = threading.Lock()
        self.snapshot_dir = cfg.snapshot_dir or context.state_dir / "snapshots"

    # ---- thresholds and policy ------------------------------------------------------
    def set_thresholds(self, args: SetThresholdArgs) -> Outcome:
        detector = self.pipeline.detector
        before = detector.decoder.thresholds
        after = merged_thresholds(before, args)
        detector.set_thresholds(after)
        log.info("thresholds set remotely: %s", after.model_dump())
        return {"thresholds": after.model_dump(), "previous": before.model_dump()}

    def set_publish_policy(self, policy: str) -> Outcome:
        before = self._get_policy()
        self._set_policy(policy)
        log.info("publish policy set remotely: %s -> %s", before, policy)
        return {"policy": policy, "previous": before}

    # ---- snapshots --------------------------------------------------------------------
    def snapshot(self, args: SnapshotArgs, done: Done) -> None:
        if not args.publish and not args.save:
            raise CommandFailed("invalid_args", "nothing to do: set publish or save (or both)", "args.publish")
        with self._lock:
            if len(self._pending) >= MAX_PENDING_SNAPSHOTS:
                raise CommandFailed("busy", f"{MAX_PENDING_SNAPSHOTS} snapshots are already waiting for a frame; retry shortly")
            token = self._next_token
            self._next_token += 1
            self._pending[token] = _PendingSnapshot(time.monotonic() + self.cfg.snapshot_timeout_s, args, done)

        def on_frame(image: np.ndarray, result: DetectionResult) -> None:  # pipeline thread: hand over, return
            self._run_later(lambda: self._finish_snapshot(token, image, result))

        self.pipeline.request_snapshot(on_frame)

    def _finish_snapshot(self, token: int, image: np.ndarray, result: DetectionResult) -> None:
        with self._lock:
            pending = self._pending.pop(token, None)
        if pending is None:
            return  # already answered with a timeout
        try:
            pending.done(self._encode(image, result, pending.args))
        except Exception as exc:
            log.exception("snapshot failed")
            pending.done(CommandFailed("failed", f"snapshot failed: {exc}"))

    def _encode(self, image: np.ndarray, result: DetectionResult, args: SnapshotArgs) -> Outcome:
        import cv2

        from agent.annotate import draw_detections

        if args.annotate:  # one frame may answer several pending snapshots: draw on our own copy
            image = draw_detections(image.copy(), result.detections)
        quality = args.quality or self.cfg.snapshot_jpeg_quality
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise CommandFailed("failed", "JPEG encoding failed")
        jpeg = buf.tobytes()
        out: Outcome = {
            "frame_id": result.frame_id,
            "capture_time": result.capture_time,
            "detections": len(result.detections),
            "bytes": len(jpeg),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
        }
        if args.publish:
            out["published"] = self._publish_jpeg(jpeg)
        if args.save:
            out["path"] = str(self._save(jpeg, result))
        return out

    def _save(self, jpeg: bytes, result: DetectionResult) -> Path:
        folder = self.snapshot_dir
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(result.capture_time))
        path = folder / f"snapshot-{stamp}-{result.source_id}-{result.frame_id}.jpg"
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, path)
        kept = sorted(folder.glob("snapshot-*.jpg"), key=lambda p: p.stat().st_mtime)
        for old in kept[: max(len(kept) - self.cfg.snapshot_keep, 0)]:
            old.unlink(missing_ok=True)
        return path

    def expire_snapshots(self, now: float | None = None) -> None:
        """Answer snapshots that got no frame in time (worker thread, periodically)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            late = [t for t, p in self._pending.items() if p.deadline <= now]
            expired = [self._pending.pop(t) for t in late]
        for p in expired:
            p.done(CommandFailed("timeout", f"no frame within {self.cfg.snapshot_timeout_s:g} s (is the camera delivering?)"))

    # ---- configuration and updates ----------------------------------------------------
    def reload_config(self) -> Outcome:
        from agent.config import load_config
        from agent.manifest import Thresholds
        from agent.sinks.base import config_hash

        path = self.context.config_path
        if path is None:
            raise CommandFailed("failed", "the agent runs on built-in defaults (no config file): nothing to reload")
        new = load_config(path)  # ConfigError -> failed result naming the field
        old = self.context.config
        applied: dict[str, Any] = {}
        m, base = new.model, self.pipeline.detector.manifest.thresholds
        wanted = Thresholds(
            score=base.score if m.score_threshold is None else m.score_threshold,
            iou=base.iou if m.iou_threshold is None else m.iou_threshold,
            max_detections=base.max_detections if m.max_detections is None else m.max_detections,
        )
        if wanted != self.pipeline.detector.decoder.thresholds:
            self.pipeline.detector.set_thresholds(wanted)
            applied["thresholds"] = wanted.model_dump()
        mqtt = next((s for s in new.sinks if isinstance(s, MqttSinkConfig)), None)
        applied.update(self._apply_live_config(mqtt))
        restart = _restart_required(old, new) if old is not None else []
        self._on_config_reloaded(config_hash(new) if not restart else None)
        log.info("config reloaded from %s: applied %s; restart needed for %s", path, sorted(applied), restart or "nothing")
        return {"path": str(path), "applied": applied, "restart_required": restart}

    def check_update(self) -> Outcome:
        if self.update_checker is None:
            raise CommandFailed(
                "not_available", "model updates (OTA) are not available in this agent yet: no updater is configured"
            )
        return self.update_checker()


_LIVE_MODEL_KEYS = {"score_threshold", "iou_threshold", "max_detections"}
_LIVE_SINK_KEYS = {"publish", "telemetry_interval_s"}


def _restart_required(old: Any, new: Any) -> list[str]:
    """Dotted keys that differ between two AgentConfigs and cannot change while running."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    changed = []
    for key in sorted(set(a) | set(b)):
        if key == "model":
            changed += [
                f"model.{k}"
                for k in sorted(set(a[key]) | set(b[key]))
                if k not in _LIVE_MODEL_KEYS and a[key].get(k) != b[key].get(k)
            ]
        elif key == "sinks":
            strip = [
                [{k: v for k, v in s.items() if not (s.get("type") == "mqtt" and k in _LIVE_SINK_KEYS)} for s in x[key]]
                for x in (a, b)
            ]
            if strip[0] != strip[1]:
                changed.append("sinks")
        elif a.get(key) != b.get(key):
            changed.append(key)
    return changed
