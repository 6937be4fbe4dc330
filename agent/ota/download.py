"""Resumable, verified downloads of one artifact into a ``.part`` file (urllib3, the HTTP stack python-tuf uses).

The signed metadata gives the exact length and sha256 before the first byte arrives, so the
transfer is bounded (never more than ``length`` bytes are written: the "endless data" attack),
hashed as it streams, and resumed with ``Range`` after a cut or a restart; the bytes already on
disk are re-hashed first (Greengrass does the same), and a mismatch that may come from them is
retried once from scratch. The result is a complete, fsynced, verified ``.part``: installing it
is the store's job (``ModelStore.install``).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

from agent.ota.errors import DownloadError
from agent.ota.fsutil import disk_free, fsync_dir

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")


class _Retry(Exception):
    """A transient failure (connection, timeout, 5xx): back off and resume."""

    def __init__(self, message: str, progressed: bool) -> None:
        super().__init__(message)
        self.progressed = progressed


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, complete length)`` of a Content-Range header; None where absent or ``*``."""
    m = _CONTENT_RANGE.match((value or "").strip())
    if m is None:
        return None, None
    first, _last, total = m.groups()
    return (int(first) if first else None), (int(total) if total and total != "*" else None)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class _Transfer:
    def __init__(
        self,
        url: str,
        part: Path,
        length: int,
        sha256: str,
        pool: urllib3.PoolManager,
        *,
        progress: Callable[[int, int], None] | None,
        on_chunk: Callable[[int], None] | None,
        stop: threading.Event | None,
        timeout_s: float,
        chunk: int,
    ) -> None:
        self.url, self.part, self.length, self.sha256 = url, part, length, sha256.lower()
        self.pool, self.progress, self.on_chunk, self.stop, self.chunk = pool, progress, on_chunk, stop, chunk
        self.timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self.hasher = hashlib.sha256()
        self.done = 0
        self.inherited = False  # the part holds bytes from before this call

    # ---- the part file -------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.part.parent.mkdir(parents=True, exist_ok=True)
            size = self.part.stat().st_size if self.part.exists() else 0
            if size > self.length:
                log.warning("%s is longer (%d B) than the signed length %d B; starting over", self.part, size, self.length)
                self.part.unlink()
                size = 0
            self.fh = open(self.part, "ab", buffering=0)  # noqa: SIM115 - closed by close(); unbuffered: ENOSPC surfaces at write
            if size:
                with open(self.part, "rb") as existing:
                    while block := existing.read(1 << 20):
                        self.hasher.update(block)
                        self.done += len(block)
                self.inherited = True
                log.info("resuming %s at %d of %d bytes", self.part, self.done, self.length)
        except OSError as exc:
            raise self._write_error(exc) from exc

    def close(self) -> None:
        fh = getattr(self, "fh", None)
        if fh is not None and not fh.closed:
            fh.close()

    def discard(self) -> None:
        self.close()
        self.part.unlink(missing_ok=True)

    def restart(self, why: str) -> None:
        """Throw the bytes on disk away and count from zero (the server cannot continue them)."""
        log.info("%s: %s; downloading %s from the start", self.part, why, self.url)
        self.fh.truncate(0)
        self.hasher = hashlib.sha256()
        self.done = 0
        self.inherited = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self.fh.write(view) :]
        except OSError as exc:
            raise self._write_error(exc) from exc
        self.hasher.update(data)
        self.done += len(data)

    def _write_error(self, exc: OSError) -> DownloadError:
        directory = self.part.parent
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            written = self.done
            self.discard()
            try:
                free = _mib(disk_free(directory))
            except OSError:
                free = "unknown"
            return DownloadError(
                f"disk full in {directory} while downloading {self.url}: the file needs {self.length} bytes "
                f"({_mib(self.length)}), {written} were written, {free} free now. The partial file was deleted; "
                "free space there (old model versions, logs) and the update is retried",
                reason="disk_full",
            )
        self.close()
        return DownloadError(
            f"cannot write {self.part}: {exc.strerror or exc}; check that {directory} is writable", reason="store_error"
        )

    def fail(self, message: str, reason: str) -> DownloadError:
        """Delete the part (its bytes cannot become the signed file) and describe why."""
        self.discard()
        return DownloadError(f"{self.url}: {message}; the partial file {self.part} was deleted", reason=reason)

    def cancelled(self) -> DownloadError:
        self.close()
        return DownloadError(
            f"download of {self.url} cancelled at {self.done} of {self.length} bytes; {self.part} is kept for a resume",
            reason="cancelled",
        )

    # ---- one HTTP exchange ---------------------------------------------------------------

    def fetch(self) -> None:
        """One GET (ranged when bytes are on disk) streamed into the part; returns with the part complete."""
        headers = {"Accept-Encoding": "identity"}
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
        try:
            resp = self.pool.request(
                "GET",
                self.url,
                headers=headers,
                preload_content=False,
                decode_content=False,
                timeout=self.timeout,
                retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5),
            )
        except _NETWORK_ERRORS as exc:
            raise _Retry(f"cannot reach {self.url}: {exc}", progressed=False) from exc
        complete = False
        try:
            self._check_response(resp)
            complete = self._stream(resp)
        finally:
            if not complete:
                resp.close()
            resp.release_conn()

    def _check_response(self, resp: urllib3.BaseHTTPResponse) -> None:
        status = resp.status
        first, total = _content_range(resp.headers.get("Content-Range"))
        if total is not None and total != self.length:
            raise self._wrong_total(total, "Content-Range")
        if status == 416:
            # The server's file ends before our part does (total == length, checked above, means a full part:
            # fetch() is not called for one). Nothing on disk can be continued.
            self.restart(f"server answered 416 to Range bytes={self.done}-")
            raise _Retry("416 Range Not Satisfiable", progressed=False)
        if status == 206:
            if first != self.done:
                self.restart(f"server sent bytes from {first} instead of {self.done}")
                raise _Retry("206 with an unexpected range", progressed=False)
        elif status == 200:
            if self.done:
                self.restart("server ignored the Range header (200 instead of 206)")
        elif status in (408, 429) or status >= 500:
            raise _Retry(f"HTTP {status}", progressed=False)
        else:
            raise DownloadError(
                f"{self.url} answered HTTP {status} {resp.reason or ''}; check the registry URL and that the target "
                "was published (the part, if any, is kept)",
                reason="http_error",
            )
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) != self.length - self.done:
            if int(declared) + self.done > self.length:
                raise self.fail(
                    f"the server announces {int(declared) + self.done} bytes, the signed length is {self.length}",
                    "oversized",
                )
            raise self.fail(
                f"the server has {int(declared) + self.done} bytes, the signed length is {self.length}", "length_mismatch"
            )

    def _wrong_total(self, total: int, where: str) -> DownloadError:
        if total > self.length:
            return self.fail(f"{where} says the file has {total} bytes, the signed length is {self.length}", "oversized")
        return self.fail(f"{where} says the file has {total} bytes, the signed length is {self.length}", "length_mismatch")

    def _stream(self, resp: urllib3.BaseHTTPResponse) -> bool:
        """Copy the body into the part; True when the response was read to its end."""
        before = self.done
        while True:
            if self.stop is not None and self.stop.is_set():
                raise self.cancelled()
            try:
                data = resp.read(self.chunk, decode_content=False)
            except _NETWORK_ERRORS as exc:
                raise _Retry(f"transfer of {self.url} broke at {self.done} bytes: {exc}", self.done > before) from exc
            if not data:
                break
            if self.done + len(data) > self.length:
                raise self.fail(f"the server sent more than the signed {self.length} bytes", "oversized")
            self.write(data)
            if self.progress is not None:
                self.progress(self.done, self.length)
            if self.on_chunk is not None:
                self.on_chunk(self.done)
        if self.done < self.length:
            raise _Retry(f"{self.url} ended at {self.done} of {self.length} bytes", self.done > before)
        return True

    def verified(self) -> bool:
        """Flush the complete part to disk and compare its hash with the signed one."""
        self.fh.flush()
        try:
            os.fsync(self.fh.fileno())
        except OSError as exc:
            raise self._write_error(exc) from exc
        return self.hasher.hexdigest() == self.sha256


def download_resumable(
    url: str,
    part: Path,
    *,
    length: int,
    sha256: str,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 30,
    retries: int = 5,
    backoff_s: float = 1.0,
    stop: threading.Event | None = None,
    chunk: int = 256 * 1024,
    pool: urllib3.PoolManager | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> Path:
    """Download ``url`` into ``part`` until it holds exactly ``length`` bytes with ``sha256``; returns ``part``.

    Resumes an existing part (``Range``), retries connection failures ``retries`` times in a row with
    exponential backoff (``backoff_s`` doubling, at most MAX_BACKOFF_S; a retry that made progress
    resets the count). DownloadError reasons: ``oversized``, ``length_mismatch``, ``hash_mismatch``
    and ``disk_full`` delete the part; ``connection``, ``cancelled`` (``stop`` set) and ``http_error``
    keep it for a later resume. ``progress(done, total)`` and ``on_chunk(done)`` run after every chunk
    written (``on_chunk`` is a fault-injection hook: whatever it raises propagates unchanged).
    """
    if length < 0:
        raise ValueError(f"length {length} must be >= 0")
    own_pool = pool is None
    http = pool if pool is not None else urllib3.PoolManager()
    t = _Transfer(url, Path(part), length, sha256, http, progress=progress, on_chunk=on_chunk, stop=stop,
                  timeout_s=timeout_s, chunk=chunk)  # fmt: skip
    try:
        t.open()
        failures = 0
        restarted = False
        while True:
            if t.done < length:
                try:
                    t.fetch()
                except _Retry as exc:
                    failures = 0 if exc.progressed else failures + 1
                    if failures > retries:
                        t.close()
                        raise DownloadError(
                            f"download of {url} failed {failures} times in a row ({exc}); {t.part} keeps "
                            f"{t.done} of {length} bytes and is resumed by the next attempt",
                            reason="connection",
                        ) from exc
                    delay = min(backoff_s * 2 ** (failures - 1), MAX_BACKOFF_S) if failures else 0.0
                    log.info("%s; retrying in %.1f s", exc, delay)
                    if stop is not None:
                        if stop.wait(delay):
                            raise t.cancelled() from exc
                    else:
                        time.sleep(delay)
                    continue
            if t.verified():
                t.close()
                fsync_dir(t.part.parent)
                return t.part
            if t.inherited and not restarted:  # the bytes from an earlier run may be the bad ones
                restarted = True
                t.restart("the resumed file does not match its sha256")
                continue
            raise t.fail(
                f"the downloaded {length} bytes have sha256 {t.hasher.hexdigest()}, expected {t.sha256}", "hash_mismatch"
            )
    finally:
        t.close()
        if own_pool:
            http.clear()


__all__ = ["MAX_BACKOFF_S", "download_resumable"]
