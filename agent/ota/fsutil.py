"""Crash-safe file writes: a reader (or the next boot) sees the old file or the new one, never half of one.

The sequence is the one Mender's single-file update module uses: write a temporary file in the
same directory, flush and fsync it, ``os.replace`` it over the target, then fsync the directory so
the rename itself survives a power cut (ext4 with ``data=ordered`` on an SD card needs both).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: Path | str) -> None:
    """Make the directory entry changes in ``path`` (creates, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # some filesystems cannot fsync a directory
            raise
    finally:
        os.close(fd)


def fsync_file(path: Path | str) -> None:
    """Flush a file's data to the device (for files written by someone else, e.g. a finished download)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably; on any failure the temp file is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path | str, obj: Any, mode: int = 0o644) -> None:
    """``atomic_write_bytes`` of ``obj`` as indented, key-sorted JSON (diffable, stable across writes)."""
    data = json.dumps(obj, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    atomic_write_bytes(path, data, mode)


def existing_ancestor(path: Path | str) -> Path:
    """``path`` itself or its nearest parent that exists (a staging dir may not be created yet)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def disk_free(path: Path | str) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding ``path`` (or its nearest parent)."""
    st = os.statvfs(existing_ancestor(path))
    return st.f_bavail * st.f_frsize


__all__ = ["atomic_write_bytes", "atomic_write_json", "disk_free", "existing_ancestor", "fsync_dir", "fsync_file"]
