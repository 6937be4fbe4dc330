"""Device tests: a real Pi (marker ``device``), an emulated arm64 Pi (qemu-user chroot) and a
booted bookworm under ``systemd-nspawn``. The last two need root and build cached rootfs once
(device_tests/host_setup.sh); they run in CI through scripts/test.sh."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_tests._rootfs import host_setup


def is_raspberry_pi() -> bool:
    model = Path("/proc/device-tree/model")
    return model.is_file() and "Raspberry Pi" in model.read_text(errors="replace")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_raspberry_pi():
        return
    skip = pytest.mark.skip(reason="needs a real Raspberry Pi (/proc/device-tree/model names none)")
    for item in items:
        if "device" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def host_tools() -> None:
    """Root, debootstrap, systemd-nspawn, qemu-user-static, podman: installed when missing."""
    if os.geteuid() != 0:
        pytest.skip("emulated-Pi/systemd/container tests need root (mounts, chroot, systemd-nspawn)")
    if shutil.which("apt-get") is None:
        pytest.skip("needs a Debian host (apt-get) for debootstrap and friends")
    host_setup("packages")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A private mosquitto on 127.0.0.1 for the session. The booted container and the arm64 chroot
    share the host's network namespace, so the agent inside reaches it at the same address."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists() or shutil.which("mosquitto_sub") is None:
        pytest.skip("needs mosquitto and mosquitto-clients (scripts/test.sh installs them)")
    work = tmp_path_factory.mktemp("broker")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest file {work}/mosquitto.log\nuser root\n")
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"mosquitto did not start on {port}") from None
                time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
