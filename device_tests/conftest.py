"""Device tests: a real Pi (marker ``device``), an emulated arm64 Pi (qemu-user chroot) and a
booted bookworm under ``systemd-nspawn``. The last two need root and build cached rootfs once
(device_tests/host_setup.sh); they run in CI through scripts/test.sh."""

from __future__ import annotations

import os
import shutil
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
