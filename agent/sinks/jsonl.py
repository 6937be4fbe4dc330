"""JSON lines: one result per line, to stdout or a file (appended).

When the reader of standard output goes away (``edge-agent run | head``), the sink asks the
pipeline to stop, once, like any Unix filter: no error per frame, no traceback at exit.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from agent.schema import DetectionResult
from agent.sinks.base import Sink, SinkConfigBase

if TYPE_CHECKING:
    from agent.pipeline import Pipeline

log = logging.getLogger(__name__)


class JsonlSinkConfig(SinkConfigBase):
    type: Literal["jsonl"] = Field("jsonl", description="Selects the JSON-lines sink.")
    path: str = Field("-", description="File to append to, or '-' for standard output.")
    events: bool = Field(True, description='Also write pipeline events as {"event": ...} lines.')
    flush_every: int = Field(1, ge=1, description="Flush the file after this many lines (1 = every line).")


class JsonlSink(Sink):
    type_key: ClassVar[str] = "jsonl"
    config_model: ClassVar[type[SinkConfigBase]] = JsonlSinkConfig

    def __init__(self, config: JsonlSinkConfig) -> None:
        super().__init__(config)
        self.config: JsonlSinkConfig = config
        self._fh: IO[str] | None = None
        self._pending = 0
        self._pipeline: Pipeline | None = None
        self._reader_gone = False

    def start(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def _stream(self) -> IO[str]:
        if self._fh is None:
            if self.config.path == "-":
                self._fh = sys.stdout
            else:
                path = Path(self.config.path)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = path.open("a", encoding="utf-8")
        return self._fh

    def _write(self, line: str) -> None:
        if self._reader_gone:
            return
        stream = self._stream()
        try:
            stream.write(line + "\n")
            self._pending += 1
            if self._pending >= self.config.flush_every:
                stream.flush()
                self._pending = 0
        except BrokenPipeError:
            self._stop_reading_gone()

    def _stop_reading_gone(self) -> None:
        self._reader_gone = True
        stream = self._fh
        if stream is not None and stream is sys.stdout:
            try:  # the interpreter flushes stdout at exit: point it at /dev/null so that flush cannot fail again
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
        log.info("%s was closed by its reader: stopping", "standard output" if self.config.path == "-" else self.config.path)
        if self._pipeline is not None:
            self._pipeline.request_stop()

    def emit(self, result: DetectionResult) -> None:
        self._write(result.model_dump_json())

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if self.config.events:
            import json

            self._write(json.dumps({"event": kind, **data}, default=str))

    def flush(self) -> None:
        if self._fh is not None and not self._reader_gone:
            try:
                self._fh.flush()
            except BrokenPipeError:
                self._stop_reading_gone()

    def close(self) -> None:
        if self._fh is not None and self._fh is not sys.stdout:
            self._fh.close()
        self._fh = None
