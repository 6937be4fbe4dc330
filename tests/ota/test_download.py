"""agent/ota/download.py against a real HTTP server (agent/ota/httpserver.py) with injected faults."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from agent.ota.download import download_resumable
from agent.ota.errors import DownloadError
from agent.ota.httpserver import RangeRequestHandler, RunningServer, start_server
from tests.ota._store_helpers import small_tmpfs

SIZE = 1_000_000
FILE = "model.bin"


@dataclass
class Faults:
    """What the server does wrong, and what it saw (shared by the handler threads of one test)."""

    cut_after: int | None = None  # close the connection after this many body bytes ...
    cuts: int = 1  # ... on this many responses
    ignore_range: bool = False  # answer 200 with the whole file
    tamper: bool = False  # flip a byte in transit
    stall_after: int | None = None  # stop sending (once) after this many bytes
    stall_s: float = 0.0
    fail_first: int | None = None  # HTTP status of the first response
    endless: bool = False  # no Content-Length, more bytes than the file, then close
    ranges: list[str | None] = field(default_factory=list)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultyHandler(RangeRequestHandler):
    faults: Faults

    def do_GET(self) -> None:
        f = self.faults
        with f.lock:
            f.ranges.append(self.headers.get("Range"))
            first = len(f.ranges) == 1
        if first and f.fail_first is not None:
            self.send_error(f.fail_first)
            return
        if f.ignore_range and "Range" in self.headers:
            del self.headers["Range"]
        if f.endless:
            data = Path(self.translate_path(self.path)).read_bytes() + b"more" * 50_000
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._send(data)
            return
        super().do_GET()

    def _send(self, block: bytes) -> None:
        self.wfile.write(block)
        with self.faults.lock:
            self.faults.sent += len(block)

    def copy_body(self, source: BinaryIO, length: int) -> None:
        f = self.faults
        with f.lock:
            cut = f.cut_after if f.cuts > 0 else None
            if cut is not None:
                f.cuts -= 1
            stall, f.stall_after = f.stall_after, None
        done = 0
        while done < length:
            block = source.read(min(8192, length - done))
            if not block:
                return
            if f.tamper and done == 0:
                block = bytes([block[0] ^ 0xFF]) + block[1:]
            if stall is not None and done + len(block) > stall:
                self._send(block[: stall - done])
                self.wfile.flush()
                time.sleep(f.stall_s)
                return
            if cut is not None and done + len(block) > cut:
                self._send(block[: cut - done])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self._send(block)
            done += len(block)


@pytest.fixture
def payload(tmp_path: Path) -> bytes:
    data = random.Random(5).randbytes(SIZE)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / FILE).write_bytes(data)
    return data


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def server(tmp_path: Path, payload: bytes, faults: Faults) -> Iterator[RunningServer]:
    handler = type("Handler", (FaultyHandler,), {"faults": faults})
    with start_server(tmp_path / "srv", handler_class=handler) as running:
        yield running


def _get(server: RunningServer, part: Path, payload: bytes, **kw: Any) -> Path:
    kw.setdefault("length", len(payload))
    kw.setdefault("sha256", hashlib.sha256(payload).hexdigest())
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("chunk", 64 * 1024)
    return download_resumable(f"{server.url}/{FILE}", part, **kw)


def _part(tmp_path: Path) -> Path:
    return tmp_path / "staging" / f"{FILE}.part"


def test_fresh_download_verifies_and_reports_progress(tmp_path: Path, server: RunningServer, payload: bytes,
                                                      faults: Faults) -> None:  # fmt: skip
    seen: list[tuple[int, int]] = []
    chunks: list[int] = []
    got = _get(server, _part(tmp_path), payload, progress=lambda d, t: seen.append((d, t)), on_chunk=chunks.append)
    assert got == _part(tmp_path) and got.read_bytes() == payload
    assert faults.ranges == [None]
    assert seen[-1] == (SIZE, SIZE) and [d for d, _ in seen] == sorted(d for d, _ in seen) == chunks
    assert len(chunks) >= SIZE // (64 * 1024)


def test_resume_after_a_cut(tmp_path: Path, server: RunningServer, payload: bytes, faults: Faults) -> None:
    faults.cut_after = 300_000
    got = _get(server, _part(tmp_path), payload)
    assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert faults.ranges == [None, "bytes=300000-"]
    assert faults.sent < 2 * SIZE and faults.sent == SIZE  # nothing was sent twice


def test_resume_after_a_restart_rehashes_the_part(tmp_path: Path, server: RunningServer, payload: bytes,
                                                  faults: Faults) -> None:  # fmt: skip
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(payload[:400_000])
    assert _get(server, part, payload).read_bytes() == payload
    assert faults.ranges == ["bytes=400000-"] and faults.sent == SIZE - 400_000


def test_a_bad_resumed_part_is_downloaded_again_once(tmp_path: Path, server: RunningServer, payload: bytes,
                                                     faults: Faults) -> None:  # fmt: skip
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 400_000)  # e.g. a power cut left zeros where data should be
    assert _get(server, part, payload).read_bytes() == payload
    assert faults.ranges == ["bytes=400000-", None]


def test_a_part_longer_than_the_signed_length_is_dropped(tmp_path: Path, server: RunningServer, payload: bytes,
                                                         faults: Faults) -> None:  # fmt: skip
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(payload + b"junk")
    assert _get(server, part, payload).read_bytes() == payload
    assert faults.ranges == [None]


def test_cancel_keeps_the_part_for_a_resume(tmp_path: Path, server: RunningServer, payload: bytes, faults: Faults) -> None:
    stop = threading.Event()

    def cancel_midway(done: int) -> None:
        if done >= 256 * 1024:
            stop.set()

    with pytest.raises(DownloadError) as info:
        _get(server, _part(tmp_path), payload, stop=stop, on_chunk=cancel_midway)
    assert info.value.reason == "cancelled" and "kept" in str(info.value)
    kept = _part(tmp_path).stat().st_size
    assert 256 * 1024 <= kept < SIZE
    assert _get(server, _part(tmp_path), payload).read_bytes() == payload
    assert faults.ranges == [None, f"bytes={kept}-"]


def test_server_that_ignores_range_starts_over(tmp_path: Path, server: RunningServer, payload: bytes, faults: Faults) -> None:
    faults.cut_after = 300_000
    faults.ignore_range = True
    assert _get(server, _part(tmp_path), payload).read_bytes() == payload
    assert faults.ranges == [None, "bytes=300000-"]  # asked to resume, got a 200 with the whole file
    assert faults.sent == 300_000 + SIZE


def test_tampered_bytes_are_deleted(tmp_path: Path, server: RunningServer, payload: bytes, faults: Faults) -> None:
    faults.tamper = True
    with pytest.raises(DownloadError) as info:
        _get(server, _part(tmp_path), payload)
    assert info.value.reason == "hash_mismatch" and hashlib.sha256(payload).hexdigest() in str(info.value)
    assert list(_part(tmp_path).parent.iterdir()) == []


def test_server_announcing_more_than_the_signed_length(tmp_path: Path, server: RunningServer, payload: bytes) -> None:
    with pytest.raises(DownloadError) as info:
        _get(server, _part(tmp_path), payload, length=SIZE - 1000, sha256=hashlib.sha256(payload[:-1000]).hexdigest())
    assert info.value.reason == "oversized"
    assert not _part(tmp_path).exists()


def test_endless_data_is_cut_at_the_signed_length(tmp_path: Path, server: RunningServer, payload: bytes,
                                                  faults: Faults) -> None:  # fmt: skip
    faults.endless = True
    written: list[int] = []
    with pytest.raises(DownloadError) as info:
        _get(server, _part(tmp_path), payload, on_chunk=written.append)
    assert info.value.reason == "oversized"
    assert max(written) <= SIZE  # never wrote past the signed length
    assert not _part(tmp_path).exists()


def test_server_with_a_shorter_file(tmp_path: Path, server: RunningServer, payload: bytes) -> None:
    with pytest.raises(DownloadError) as info:
        _get(server, _part(tmp_path), payload, length=SIZE + 100)
    assert info.value.reason == "length_mismatch" and not _part(tmp_path).exists()


def test_416_for_a_part_that_already_holds_the_server_file(tmp_path: Path, server: RunningServer, payload: bytes,
                                                           faults: Faults) -> None:  # fmt: skip
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(payload)
    with pytest.raises(DownloadError) as info:
        _get(server, part, payload, length=SIZE + 100)  # the metadata says the file is longer
    assert faults.ranges == [f"bytes={SIZE}-"]
    assert info.value.reason == "length_mismatch" and not part.exists()


def test_a_complete_part_is_verified_without_asking(tmp_path: Path, server: RunningServer, payload: bytes,
                                                    faults: Faults) -> None:  # fmt: skip
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(payload)
    assert _get(server, part, payload).read_bytes() == payload
    assert faults.ranges == []


def test_server_errors_and_stalls_are_retried(tmp_path: Path, server: RunningServer, payload: bytes, faults: Faults) -> None:
    faults.fail_first = 503
    faults.stall_after, faults.stall_s = 200_000, 1.0
    assert _get(server, _part(tmp_path), payload, timeout_s=0.3).read_bytes() == payload
    assert faults.ranges[:2] == [None, None] and len(faults.ranges) == 3
    resumed_at = int((faults.ranges[2] or "").removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 200_000  # what reached the disk before the read timed out


def test_not_found_is_not_retried(tmp_path: Path, server: RunningServer, payload: bytes, faults: Faults) -> None:
    with pytest.raises(DownloadError) as info:
        download_resumable(f"{server.url}/missing.bin", _part(tmp_path), length=10, sha256="0" * 64)
    assert info.value.reason == "http_error" and "404" in str(info.value)
    assert faults.ranges == [None]


def test_unreachable_server_gives_up_and_keeps_the_part(tmp_path: Path, payload: bytes) -> None:
    with start_server(tmp_path / "srv") as gone:
        url = gone.url
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(payload[:1000])
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download_resumable(f"{url}/{FILE}", part, length=SIZE, sha256="0" * 64, retries=2, backoff_s=0.05, timeout_s=1)
    assert info.value.reason == "connection" and "3 times" in str(info.value)
    assert 0.15 <= time.monotonic() - t0 < 5  # backed off 0.05 + 0.1 s
    assert part.read_bytes() == payload[:1000]


class Crash(Exception):
    pass


def test_on_chunk_faults_propagate_unchanged(tmp_path: Path, server: RunningServer, payload: bytes) -> None:
    def crash(done: int) -> None:
        raise Crash(done)

    with pytest.raises(Crash):
        _get(server, _part(tmp_path), payload, on_chunk=crash)
    assert _part(tmp_path).stat().st_size == 64 * 1024  # the chunk was written before the hook ran


def test_disk_full_deletes_the_part_and_says_how_much_is_needed(tmp_path: Path, server: RunningServer,
                                                                 payload: bytes) -> None:  # fmt: skip
    with small_tmpfs(tmp_path / "small", "512k") as small:
        part = small / "staging" / f"{FILE}.part"
        with pytest.raises(DownloadError) as info:
            _get(server, part, payload)
        msg = str(info.value)
        assert info.value.reason == "disk_full"
        assert str(part.parent) in msg and str(SIZE) in msg
        assert not part.exists()
