"""sd_notify over a real AF_UNIX datagram socket, the way systemd listens for it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.notify import ServiceNotifier, sd_notify, watchdog_interval_s


def _recv_all(sock: socket.socket) -> list[list[str]]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return out


@pytest.fixture(params=["abstract", "path"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "abstract":
        name = f"edge-agent-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    sock.setblocking(False)
    yield sock, address
    sock.close()


def test_sd_notify_sends_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    assert sd_notify("READY=1", "STATUS=up", environ={"NOTIFY_SOCKET": address})
    assert _recv_all(sock) == [["READY=1", "STATUS=up"]]


def test_sd_notify_without_socket_is_a_noop() -> None:
    assert sd_notify("READY=1", environ={}) is False
    assert sd_notify("READY=1", environ={"NOTIFY_SOCKET": "@edge-agent-nobody-listens"}) is False


def test_watchdog_interval_is_half_and_respects_pid() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({}) is None


def test_notifier_ready_after_first_frame_then_rate_limited_watchdog(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    now = [100.0]
    notifier = ServiceNotifier(
        lambda: "12.5 fps, model demo 1",
        environ={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000"},  # 4 s -> ping every 2 s
        clock=lambda: now[0],
    )
    assert _recv_all(sock) == []  # nothing before a frame went through
    notifier()
    assert _recv_all(sock) == [["READY=1", "STATUS=12.5 fps, model demo 1"]]
    for _ in range(10):  # many frames within half the watchdog period: no ping flood
        now[0] += 0.1
        notifier()
    assert _recv_all(sock) == []
    now[0] += 1.5
    notifier()
    assert _recv_all(sock) == [["WATCHDOG=1"]]
    now[0] += ServiceNotifier.STATUS_EVERY_S
    notifier()
    assert _recv_all(sock) == [["WATCHDOG=1", "STATUS=12.5 fps, model demo 1"]]
    notifier.stopping()
    msgs = _recv_all(sock)
    assert msgs[0][0] == "STOPPING=1"


def test_notifier_disabled_outside_systemd() -> None:
    notifier = ServiceNotifier(lambda: "x", environ={})
    notifier()
    notifier.stopping()
    assert not notifier.enabled and not notifier.ready


def test_run_command_sends_ready_and_stopping(listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`edge-agent run` on the synthetic source: READY=1 with a STATUS naming fps and model, STOPPING=1 at the end."""
    from agent.cli import main

    sock, address = listener
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000")  # 1 ms: every frame pings
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("EDGE_AGENT_SOURCE__TYPE", "synthetic")
    assert main(["run", "--frames", "5"]) == 0
    flat = [line for msg in _recv_all(sock) for line in msg]
    assert flat[0] == "READY=1"
    assert any(line.startswith("STATUS=") and "fps" in line and "model" in line for line in flat)
    assert "WATCHDOG=1" in flat
    assert "STOPPING=1" in flat
