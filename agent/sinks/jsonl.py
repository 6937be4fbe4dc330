"""JSON lines: one result per line, to stdout or a file (appended)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

from pydantic import Field

from agent.schema import DetectionResult
from agent.sinks.base import Sink, SinkConfigBase


class JsonlSinkConfig(SinkConfigBase):
    type: Literal["jsonl"] = Field("jsonl", description="Selects the JSON-lines sink.")
    path: str = Field("-", description="File to append to, or '-' for standard output.")
    events: bool = Field(True, description="Also write pipeline events as {\"event\": ...} lines.")
    flush_every: int = Field(1, ge=1, description="Flush the file after this many lines (1 = every line).")


class JsonlSink(Sink):
    type_key: ClassVar[str] = "jsonl"
    config_model: ClassVar[type[SinkConfigBase]] = JsonlSinkConfig

    def __init__(self, config: JsonlSinkConfig) -> None:
        super().__init__(config)
        self.config: JsonlSinkConfig = config
        self._fh: IO[str] | None = None
        self._pending = 0

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
        stream = self._stream()
        stream.write(line + "\n")
        self._pending += 1
        if self._pending >= self.config.flush_every:
            stream.flush()
            self._pending = 0

    def emit(self, result: DetectionResult) -> None:
        self._write(result.model_dump_json())

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if self.config.events:
            import json

            self._write(json.dumps({"event": kind, **data}, default=str))

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None and self._fh is not sys.stdout:
            self._fh.close()
        self._fh = None
