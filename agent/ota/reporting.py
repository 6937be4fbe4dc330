"""How the updater tells the world: the retained update state and the ``update`` events.

The state (``UpdateState``) goes to every sink that carries it (the MQTT status, the HTTP
status); every phase change is also an ``update`` event through the pipeline's sinks. Findings
made before the sinks run (start-up recovery) are queued and sent by :meth:`flush`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.telemetry import UpdateState

log = logging.getLogger("agent.ota")

EmitEvent = Callable[[str, dict[str, Any]], None]
_STATE_FIELDS = ("model", "version", "progress", "reason", "detail")


class UpdateReporter:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.state = UpdateState(state="idle", since=clock())
        self.sinks: list[Any] = []  # sinks with set_update_state()
        self.emit_event: EmitEvent | None = None  # the pipeline's emit_event, once attached
        self._pending: list[tuple[str, dict[str, Any]]] = []

    def queue(self, phase: str, **data: Any) -> None:
        """Report later (start-up findings, before the sinks are running)."""
        self._pending.append((phase, {k: v for k, v in data.items() if v is not None}))
        self.state = self._state(phase, data)

    def flush(self) -> None:
        for phase, data in self._pending:
            self._emit(phase, data)
        self._pending.clear()

    def report(self, phase: str, *, event: bool = True, extra: dict[str, Any] | None = None, **data: Any) -> None:
        """A new phase: update the state everywhere, send an event (unless ``event=False``), log it."""
        self.state = self._state(phase, data)
        self.publish()
        if event:
            payload = {k: v for k, v in data.items() if v is not None}
            if extra:
                payload.update({k: v for k, v in extra.items() if v is not None})
            self._emit(phase, payload)
        level = logging.WARNING if phase in ("failed", "rolled_back") else logging.INFO
        if phase != "downloading" or data.get("progress") in (0.0, 1.0):
            log.log(
                level, "update %s%s", phase, "".join(f" {k}={v}" for k, v in data.items() if v is not None and k != "progress")
            )

    def publish(self) -> None:
        for sink in self.sinks:
            try:
                sink.set_update_state(self.state)
            except Exception as exc:  # noqa: BLE001 - reporting must not break the update
                log.error("could not report the update state to %s: %s", getattr(sink, "type_key", sink), exc)

    def _state(self, phase: str, data: dict[str, Any]) -> UpdateState:
        return UpdateState(state=phase, since=self.clock(), **{k: data.get(k) for k in _STATE_FIELDS})

    def _emit(self, phase: str, data: dict[str, Any]) -> None:
        if self.emit_event is not None:
            self.emit_event("update", {"phase": phase, **data})
