"""A live console view (rich): throughput, per-stage latency and the latest detections.

``emit`` only stores the latest result; rich redraws a few times a second on its own
thread, so the view costs the pipeline nothing per frame.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from agent.schema import DetectionResult
from agent.sinks.base import Sink, SinkConfigBase

if TYPE_CHECKING:
    from agent.pipeline import Pipeline, PipelineStats


class ConsoleSinkConfig(SinkConfigBase):
    type: Literal["console"] = Field("console", description="Selects the live console view.")
    refresh_per_second: float = Field(4.0, gt=0, le=30, description="Redraws per second.")
    max_rows: int = Field(10, ge=1, description="Detections listed at most.")


class ConsoleSink(Sink):
    type_key: ClassVar[str] = "console"
    config_model: ClassVar[type[SinkConfigBase]] = ConsoleSinkConfig

    def __init__(self, config: ConsoleSinkConfig, console: Console | None = None) -> None:
        super().__init__(config)
        self.config: ConsoleSinkConfig = config
        self._console = console or Console(stderr=False)
        self._latest: DetectionResult | None = None
        self._events: deque[str] = deque(maxlen=4)
        self._stats: PipelineStats | None = None
        self._live: Live | None = None

    def start(self, pipeline: Pipeline) -> None:
        self._stats = pipeline.stats
        self._live = Live(self, console=self._console, refresh_per_second=self.config.refresh_per_second, transient=False)
        self._live.start()

    def emit(self, result: DetectionResult) -> None:
        self._latest = result

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self._events.append(f"{time.strftime('%H:%M:%S')} {kind} {data}")

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __rich__(self) -> Panel:
        result, stats = self._latest, self._stats
        head = Table.grid(padding=(0, 2))
        if stats is not None:
            snap = stats.snapshot()
            head.add_row(
                f"[b]fps[/b] {snap['inference_fps']:.1f}",
                f"[b]frames[/b] {snap['frames']}",
                f"[b]dropped[/b] {snap['frames_dropped']}",
                f"[b]sink errors[/b] {snap['sink_errors']}",
            )
            lat = snap["latency_ms"]
            head.add_row(*(f"[b]{k}[/b] p50 {_fmt(v['p50'])} ms" for k, v in lat.items() if k != "capture_to_result"))
            c2r = lat["capture_to_result"]
            head.add_row(f"[b]capture→result[/b] p50 {_fmt(c2r['p50'])} ms, p95 {_fmt(c2r['p95'])} ms")
        table = Table(expand=True)
        for col in ("label", "score", "x1", "y1", "x2", "y2"):
            table.add_column(col, justify="right" if col != "label" else "left")
        title = "waiting for the first frame…"
        if result is not None:
            title = (
                f"{result.model.name} {result.model.version} · {result.source_id} frame {result.frame_id}"
                f" · {len(result.detections)} detections"
            )
            for det in result.detections[: self.config.max_rows]:
                b = det.box
                coords = (f"{b.x1:.0f}", f"{b.y1:.0f}", f"{b.x2:.0f}", f"{b.y2:.0f}") if b else ("", "", "", "")
                table.add_row(det.label, f"{det.score:.2f}", *coords)
        parts: list[Any] = [head, table]
        if self._events:
            parts.append("\n".join(self._events))
        return Panel(Group(*parts), title=f"edge-agent · {title}", border_style="cyan")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
