"""agent/ota/httpserver.py: Range requests as a resumable download needs them, and fault injection by subclassing."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, ClassVar

import pytest

from agent.ota.httpserver import RangeRequestHandler, RunningServer, parse_range, start_server

SIZE = 100_000


@pytest.fixture
def blob(tmp_path: Path) -> bytes:
    data = os.urandom(SIZE)
    (tmp_path / "blob.bin").write_bytes(data)
    return data


@pytest.fixture
def server(tmp_path: Path, blob: bytes) -> Iterator[RunningServer]:
    with start_server(tmp_path) as running:
        yield running


def get(
    server: RunningServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_full_get_advertises_ranges(server: RunningServer, blob: bytes) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}"
    status, headers, body = get(server, "/blob.bin")
    assert (status, headers["accept-ranges"], headers["content-length"], body) == (200, "bytes", str(SIZE), blob)


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=500-", 500, SIZE - 1),
        ("bytes=-10", SIZE - 10, SIZE - 1),
        ("bytes=99990-200000", 99990, SIZE - 1),  # a last byte past the end is clipped
    ],
)
def test_single_ranges_get_206(server: RunningServer, blob: bytes, spec: str, first: int, last: int) -> None:
    status, headers, body = get(server, "/blob.bin", {"Range": spec})
    assert status == 206
    assert headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert body == blob[first : last + 1] and headers["content-length"] == str(last - first + 1)


def test_unsatisfiable_range_gets_416_with_the_size(server: RunningServer) -> None:
    status, headers, body = get(server, "/blob.bin", {"Range": f"bytes={SIZE}-"})
    assert (status, headers["content-range"], body) == (416, f"bytes */{SIZE}", b"")


def test_multi_and_malformed_ranges_get_the_whole_file(server: RunningServer, blob: bytes) -> None:
    for spec in ("bytes=0-1,5-6", "bytes=9-3", "items=0-5"):
        status, _, body = get(server, "/blob.bin", {"Range": spec})
        assert (status, body) == (200, blob), spec


def test_head_and_missing_files(server: RunningServer) -> None:
    status, headers, body = get(server, "/blob.bin", {"Range": "bytes=10-19"}, method="HEAD")
    assert (status, headers["content-range"], headers["content-length"], body) == (206, f"bytes 10-19/{SIZE}", "10", b"")
    assert get(server, "/nope.bin")[0] == 404


def test_parse_range_edges() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=-0", 10) == "unsatisfiable"
    assert parse_range("bytes=-50", 10) == (0, 9)
    assert parse_range("bytes=0-0", 0) == "unsatisfiable"


class CutAfter(RangeRequestHandler):
    """Sends this many body bytes, then drops the connection: a flaky link."""

    cut_after: ClassVar[int] = 1000

    def copy_body(self, source: BinaryIO, length: int) -> None:
        self.wfile.write(source.read(min(length, self.cut_after)))
        self.close_connection = True


def test_fault_injection_by_subclass_and_resume_with_range(tmp_path: Path, blob: bytes) -> None:
    with start_server(tmp_path, handler_class=CutAfter) as flaky:
        conn = http.client.HTTPConnection("127.0.0.1", flaky.port, timeout=5)
        conn.request("GET", "/blob.bin")
        with pytest.raises(http.client.IncompleteRead) as err:
            conn.getresponse().read()
        conn.close()
    part = err.value.partial
    assert part == blob[:1000]
    with start_server(tmp_path) as good:  # resume where the cut left off
        status, _, rest = get(good, "/blob.bin", {"Range": f"bytes={len(part)}-"})
    assert status == 206 and part + rest == blob


def test_stop_closes_the_port(tmp_path: Path, blob: bytes) -> None:
    running = start_server(tmp_path)
    running.stop()
    running.stop()  # idempotent
    with pytest.raises(OSError):
        get(running, "/blob.bin")
