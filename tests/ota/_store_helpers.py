"""Shared by the store/journal/download/resources tests: a real small filesystem to fill up."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False)


@contextmanager
def small_tmpfs(directory: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory`` (skips the test where mounting is not allowed)."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small filesystem to fill")
    directory.mkdir(parents=True, exist_ok=True)
    proc = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory))
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs on {directory} (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield directory
    finally:
        if _run("umount", str(directory)).returncode != 0:
            _run("umount", "-l", str(directory))


def remount_readonly(directory: Path) -> None:
    proc = _run("mount", "-o", "remount,ro", str(directory))
    if proc.returncode != 0:
        pytest.skip(f"cannot remount {directory} read-only: {proc.stderr.strip()}")


def fill(directory: Path, leave: int = 0) -> Path:
    """Write a file that uses all but about ``leave`` bytes of the filesystem holding ``directory``."""
    st = shutil.disk_usage(directory)
    filler = directory / "filler"
    remaining = max(0, st.free - leave)
    block = b"\0" * 65536
    # unbuffered, and ENOSPC a little before statvfs said (block rounding) is full too
    with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
        while remaining > 0:
            remaining -= fh.write(block[: min(len(block), remaining)])
    return filler
