"""agent/ota/fsutil.py: atomic, durable replacement of small files, on real filesystems."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from agent.ota.fsutil import atomic_write_bytes, atomic_write_json, disk_free, existing_ancestor, fsync_dir
from tests.ota._store_helpers import fill, small_tmpfs


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_atomic_write_replaces_content_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "current.json"
    target.write_text("old")
    atomic_write_bytes(target, b"new bytes", mode=0o600)
    assert target.read_bytes() == b"new bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert _leftovers(tmp_path, {"current.json"}) == []


def test_failed_replace_keeps_the_old_file_and_removes_the_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "current.json"
    target.write_text('{"version": "1"}')

    def crash(src: str, dst: str) -> None:
        raise OSError(5, "simulated I/O error at rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_json(target, {"version": "2"})
    assert json.loads(target.read_text()) == {"version": "1"}
    assert _leftovers(tmp_path, {"current.json"}) == []


def test_unserializable_object_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_disk_full_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "1m") as small:
        target = small / "current.json"
        target.write_text("old")
        filler = fill(small, leave=0)
        with pytest.raises(OSError) as info:
            atomic_write_bytes(target, b"x" * 200_000)
        assert info.value.errno == 28  # ENOSPC
        assert target.read_text() == "old"
        assert _leftovers(small, {"current.json", filler.name}) == []


def test_disk_free_follows_the_filesystem(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "1m") as small:
        assert 900_000 < disk_free(small) <= 2**20
        assert disk_free(small / "not" / "yet" / "created") == disk_free(small)
        (small / "blob").write_bytes(b"\1" * 300_000)
        assert disk_free(small) <= 2**20 - 300_000


def test_existing_ancestor_and_fsync_dir(tmp_path: Path) -> None:
    assert existing_ancestor(tmp_path / "a" / "b") == tmp_path
    fsync_dir(tmp_path)  # a real directory fsync: must not raise
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")
