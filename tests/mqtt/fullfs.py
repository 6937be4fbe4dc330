"""A small tmpfs the tests can fill to the last byte (a full SD card) and free again; needs root (mount)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallDisk:
    """``mount -t tmpfs -o size=...`` at ``path``; ``fill()`` takes every free byte, ``free()`` gives it back."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
        self.filler = path / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # unbuffered: nothing left to flush at close
        try:
            for chunk in (1 << 20, 4096, 1):  # big blocks, then what is left a page and a byte at a time
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        assert self.free_bytes() == 0, self.free_bytes()

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def small_disk(tmp_path: Path, size: str = "8m") -> Iterator[SmallDisk]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = SmallDisk(tmp_path / "small-disk", size)
    try:
        yield disk
    finally:
        disk.close()
