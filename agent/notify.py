"""systemd's notify protocol (sd_notify(3)) in plain sockets: READY, WATCHDOG, STATUS, STOPPING.

No libsystemd: one AF_UNIX datagram of newline-separated ``KEY=value`` lines to
``$NOTIFY_SOCKET`` (``@name`` is an abstract socket). Without ``NOTIFY_SOCKET`` every call
is a no-op, so the agent behaves the same outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)


def sd_notify(*lines: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``lines`` (``"READY=1"``, ...) to systemd; False when not under systemd or on error."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as exc:  # systemd itself says errors are best ignored; we log once per kind
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` (sd_watchdog_enabled(3)), or None when no watchdog is armed for us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class ServiceNotifier:
    """A frame hook: READY=1 after the first frame, then WATCHDOG=1 and STATUS= from the frame loop.

    Pinging only from the frame loop is the point: a pipeline that stops producing frames
    stops pinging, and systemd restarts it (WatchdogSec=).
    """

    STATUS_EVERY_S = 5.0

    def __init__(
        self,
        status: Callable[[], str],
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env = dict(os.environ if environ is None else environ)
        self._status = status
        self._clock = clock
        self.enabled = bool(self._env.get("NOTIFY_SOCKET"))
        self.watchdog_every_s = watchdog_interval_s(self._env)
        self.ready = False
        self._last_ping = 0.0
        self._last_status = 0.0

    def _send(self, *lines: str) -> None:
        sd_notify(*lines, environ=self._env)

    def __call__(self, _result: Any = None) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if not self.ready:
            self.ready = True
            self._last_ping = self._last_status = now
            self._send("READY=1", f"STATUS={self._status()}")
            return
        lines = []
        if self.watchdog_every_s is not None and now - self._last_ping >= self.watchdog_every_s:
            self._last_ping = now
            lines.append("WATCHDOG=1")
        if now - self._last_status >= self.STATUS_EVERY_S:
            self._last_status = now
            lines.append(f"STATUS={self._status()}")
        if lines:
            self._send(*lines)

    def stopping(self, status: str = "stopping: finishing in-flight frames") -> None:
        if self.enabled:
            self._send("STOPPING=1", f"STATUS={status}")


def attach_notifier(pipeline: Any) -> ServiceNotifier:
    """Hook a :class:`ServiceNotifier` into ``pipeline``'s frame loop; STATUS names fps and model."""

    def status() -> str:
        snap = pipeline.stats.snapshot()
        ref = pipeline.detector.ref
        fps = snap["inference_fps"]
        return f"{fps:.1f} fps, model {ref.name} {ref.version}, {snap['frames']} frames, {snap['detections']} detections"

    notifier = ServiceNotifier(status)
    pipeline.frame_hooks.append(notifier)
    return notifier
