"""The on-device model store (``<state_dir>/ota``): versioned model directories and two pointer files.

::

    ota/current.json, previous.json          {"name", "version", "path" (relative to ota/), "sha256", "committed_at"}
    ota/versions/<name>/<version>/<file>      + model.json (the signed manifest, its sha256 set)
    ota/staging/<name>/<version>/<file>.part  a resumable download

A model file is never edited in place: a new version lands in its own directory (rename of a
verified download) and only the small pointer files change, each with write-temp -> fsync ->
``os.replace`` -> fsync(dir). Files are re-hashed before every load (``verify``), because a
pointer only says which file to trust, not that the SD card still holds the right bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ModelFileError
from agent.manifest import sha256_file
from agent.ota.errors import StoreError
from agent.ota.fsutil import atomic_write_json, fsync_dir, fsync_file
from agent.ota.versions import compare_versions, is_valid_version

log = logging.getLogger(__name__)

CURRENT = "current.json"
PREVIOUS = "previous.json"
MANIFEST = "model.json"
VERSIONS = "versions"
STAGING = "staging"
PART_SUFFIX = ".part"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Installed:
    """A model version in the store. ``committed_at`` is set for the versions the pointers name."""

    name: str
    version: str
    path: Path  # the model file, absolute
    sha256: str
    committed_at: float | None
    manifest_path: Path


class _Pointer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=_PLAIN_NAME.pattern)
    version: str
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    committed_at: float


def _check_name(value: str, what: str) -> str:
    bad_file = what == "file name" and value == MANIFEST
    if bad_file or not _PLAIN_NAME.match(value) or (what == "version" and not is_valid_version(value)):
        raise StoreError(
            f"model store: {what} {value!r} cannot be used as a path component (letters, digits, . _ -; a version is "
            f"dotted numbers; a file is not called {MANIFEST}); the registry's metadata is malformed",
            reason="bad_name",
        )
    return value


class ModelStore:
    """Versioned model directories under ``root`` plus the current/previous pointers."""

    def __init__(self, root: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root).absolute()
        self._clock = clock

    # ---- pointers ------------------------------------------------------------------------

    def current(self) -> Installed | None:
        """The committed model the agent should load; None when there is none (or its pointer is unusable)."""
        return self._read_pointer(CURRENT)

    def previous(self) -> Installed | None:
        """The model that was current before the last commit (the rollback target); None when unusable."""
        return self._read_pointer(PREVIOUS)

    def commit(self, installed: Installed) -> Installed:
        """Make ``installed`` current and the old current previous.

        previous.json is written first: a crash between the two writes leaves current.json naming
        the old model (still valid, the commit simply did not happen) rather than a previous.json
        that no longer names the model we came from.
        """
        now = self._clock()
        old = self.current()
        if old is not None and (old.name, old.version) != (installed.name, installed.version):
            self._write_pointer(PREVIOUS, old)
        committed = dataclasses.replace(installed, committed_at=now)
        self._write_pointer(CURRENT, committed)
        return committed

    def set_current(self, installed: Installed) -> Installed:
        """Point current.json at ``installed`` (an explicit rollback); previous.json is left as it is."""
        committed = dataclasses.replace(installed, committed_at=self._clock())
        self._write_pointer(CURRENT, committed)
        return committed

    def _write_pointer(self, filename: str, installed: Installed) -> None:
        try:
            rel = installed.path.relative_to(self.root)
        except ValueError:
            raise StoreError(
                f"model store {self.root}: {installed.path} is outside the store; install it first", reason="not_installed"
            ) from None
        doc = {
            "name": installed.name,
            "version": installed.version,
            "path": rel.as_posix(),
            "sha256": installed.sha256,
            "committed_at": installed.committed_at if installed.committed_at is not None else self._clock(),
        }
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.root / filename, doc)
        except OSError as exc:
            raise StoreError(
                f"cannot write {self.root / filename}: {exc.strerror or exc}; the model in use is unchanged. "
                "Check that the directory is writable and the filesystem is not full or read-only",
                reason="store_error",
            ) from exc

    def _read_pointer(self, filename: str) -> Installed | None:
        path = self.root / filename
        try:
            ptr = _Pointer.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            log.error("model store: %s is unusable (%s); treating it as missing", path, _short(exc))
            return None
        model_file = (self.root / ptr.path).resolve()
        if not model_file.is_relative_to(self.root.resolve()):
            log.error("model store: %s points outside the store (%s); treating it as missing", path, ptr.path)
            return None
        if not model_file.is_file():
            log.error("model store: %s names %s, which does not exist; treating it as missing", path, model_file)
            return None
        return Installed(ptr.name, ptr.version, model_file, ptr.sha256, ptr.committed_at, model_file.parent / MANIFEST)

    # ---- install -------------------------------------------------------------------------

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / VERSIONS / _check_name(name, "model name") / _check_name(version, "version")

    def staging_dir(self, name: str, version: str) -> Path:
        return self.root / STAGING / _check_name(name, "model name") / _check_name(version, "version")

    def staging_part(self, name: str, version: str, filename: str) -> Path:
        """Where the download of ``filename`` goes (``staging/<name>/<version>/<filename>.part``); directories created."""
        d = self.staging_dir(name, version)
        d.mkdir(parents=True, exist_ok=True)
        return d / (_check_name(filename, "file name") + PART_SUFFIX)

    def install(self, name: str, version: str, part: Path, filename: str, manifest: dict[str, Any], sha256: str) -> Installed:
        """Move a verified download into ``versions/<name>/<version>/<filename>`` beside its ``model.json``.

        The part is re-hashed first (it may have waited on disk since it was verified). Idempotent:
        an identical file already installed is kept (and the part dropped). Nothing here changes
        which model is current.
        """
        dest_dir = self.version_dir(name, version)
        final = dest_dir / _check_name(filename, "file name")
        if final.is_file() and (dest_dir / MANIFEST).is_file() and sha256_file(final) == sha256:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            return self._installed(name, version, final, sha256)
        if not part.is_file():
            raise StoreError(
                f"cannot install {name} {version}: {part} does not exist; download it first", reason="not_downloaded"
            )
        actual = sha256_file(part)
        if actual != sha256:
            part.unlink()
            raise StoreError(
                f"{part} has sha256 {actual}, expected {sha256} from the signed metadata; the partial file was "
                "deleted and the next update attempt downloads it again",
                reason="hash_mismatch",
            )
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            fsync_dir(dest_dir.parent)
            # model.json before the model: a crash in between leaves a manifest without a model, which
            # ``versions`` ignores and the next install completes.
            atomic_write_json(dest_dir / MANIFEST, {**manifest, "sha256": sha256})
            fsync_file(part)
            os.chmod(part, 0o644)
            _move(part, final)
            fsync_dir(dest_dir)
            fsync_dir(part.parent)
        except OSError as exc:
            raise StoreError(
                f"cannot install {name} {version} into {dest_dir}: {exc.strerror or exc}; free space on that filesystem "
                "or make it writable, then retry",
                reason="disk_full" if exc.errno == errno.ENOSPC else "store_error",
            ) from exc
        _remove_empty_dirs(part.parent, stop=self.root)
        return self._installed(name, version, final, sha256)

    def _installed(self, name: str, version: str, path: Path, sha256: str) -> Installed:
        return Installed(name, version, path, sha256, None, path.parent / MANIFEST)

    def verify(self, installed: Installed) -> Path:
        """Re-hash the model file before loading it; ModelFileError (both hashes named) if it changed."""
        try:
            actual = sha256_file(installed.path)
        except OSError as exc:
            raise ModelFileError(
                f"{installed.path} ({installed.name} {installed.version}) cannot be read: {exc.strerror or exc}; "
                "the update store is damaged, the agent falls back to the previous model"
            ) from exc
        if actual != installed.sha256:
            raise ModelFileError(
                f"{installed.path} ({installed.name} {installed.version}) has sha256 {actual}, but {installed.sha256} "
                "was installed: the file was modified or the storage is corrupt. Do not load it; re-install the version "
                "(or check the SD card)"
            )
        return installed.path

    # ---- listing and clean-up --------------------------------------------------------------

    def versions(self, name: str) -> list[Installed]:
        """Complete installed versions of ``name`` (model file + model.json), oldest first."""
        found: list[Installed] = []
        base = self.root / VERSIONS / _check_name(name, "model name")
        if not base.is_dir():
            return []
        for d in base.iterdir():
            if not (d.is_dir() and is_valid_version(d.name)):
                continue
            item = self._read_version_dir(name, d)
            if item is not None:
                found.append(item)
        return sorted(found, key=_version_sort_key)

    def _read_version_dir(self, name: str, d: Path) -> Installed | None:
        try:
            manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        sha = manifest.get("sha256") if isinstance(manifest, dict) else None
        files = [p for p in d.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")]
        if not isinstance(sha, str) or len(files) != 1:
            return None
        return self._installed(name, d.name, files[0].absolute(), sha)

    def collect(self, keep: int, in_progress: tuple[str, str] | None = None) -> list[Path]:
        """Delete version directories beyond the newest ``keep`` per model and stale staging downloads.

        Never deletes the versions current.json and previous.json name, nor ``in_progress``
        (``(name, version)`` of the update under way: its staging part and its installed directory).
        Returns what was deleted.
        """
        if keep < 0:
            raise ValueError(f"collect(keep={keep}): keep must be >= 0")
        protected = {(i.name, i.version) for i in (self.current(), self.previous()) if i is not None}
        if in_progress is not None:
            protected.add(in_progress)
        deleted: list[Path] = []
        versions_root = self.root / VERSIONS
        for model_dir in _subdirs(versions_root):
            dirs = sorted((d for d in _subdirs(model_dir) if is_valid_version(d.name)), key=lambda d: _VersionKey(d.name))
            newest_first = list(reversed(dirs))
            for d in newest_first[keep:]:
                if (model_dir.name, d.name) not in protected:
                    deleted.append(_rmtree(d))
        for model_dir in _subdirs(self.root / STAGING):
            for d in _subdirs(model_dir):
                if (model_dir.name, d.name) != in_progress:
                    deleted.append(_rmtree(d))
            _remove_empty_dirs(model_dir, stop=self.root)
        return deleted


class _VersionKey:
    """Sort key ordering version strings numerically (``1.10`` after ``1.9``)."""

    def __init__(self, version: str) -> None:
        self.version = version

    def __lt__(self, other: _VersionKey) -> bool:
        return compare_versions(self.version, other.version) < 0


def _version_sort_key(item: Installed) -> _VersionKey:
    return _VersionKey(item.version)


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return []


def _rmtree(path: Path) -> Path:
    shutil.rmtree(path)
    log.info("model store: deleted %s", path)
    return path


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; across filesystems, copy to a temp beside ``dst``, fsync, then rename."""
    try:
        os.replace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        shutil.copyfile(src, tmp)
        fsync_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    src.unlink()


def _remove_empty_dirs(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents while they are empty, up to (not including) ``stop``."""
    p = path
    while p != stop and stop in p.parents:
        try:
            p.rmdir()
        except OSError:
            return
        p = p.parent


def _short(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(str(x) for x in first['loc']) or 'document'}: {first['msg']}"
    return str(exc)


__all__ = ["CURRENT", "MANIFEST", "PREVIOUS", "Installed", "ModelStore"]
