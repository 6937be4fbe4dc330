"""A static file server with HTTP Range support, for development (`edge-registry serve`) and tests.

Production registries are served by nginx, S3 or any static host; this one exists so that tests
exercise real HTTP (resumable downloads, 206/416) without extra software. Tests subclass
``RangeRequestHandler`` for fault injection: every body byte goes through ``copy_body``.
"""

from __future__ import annotations

import functools
import http.server
import logging
import os
import re
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 64 * 1024


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The inclusive byte range ``(first, last)`` a ``Range`` header asks for.

    Returns None to serve the whole file (no header, a malformed or multi-range header: RFC 9110
    lets a server ignore those) and ``"unsatisfiable"`` when the range lies outside the file.
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    first_text, last_text = m.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # suffix range: the last n bytes
        n = int(last_text)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None  # syntactically invalid: ignore, as RFC 9110 says
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """GET/HEAD of static files with single ``Range: bytes=...`` requests (206 / 416)."""

    protocol_version = "HTTP/1.1"  # keep-alive, like a real static host; every response has a Content-Length

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def copy_body(self, source: BinaryIO, length: int) -> None:
        """Write ``length`` bytes of ``source`` (already positioned) to the client; override to inject faults."""
        remaining = length
        while remaining > 0:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                break
            self.wfile.write(chunk)
            remaining -= len(chunk)

    def _serve(self, *, body: bool) -> None:
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            if body:
                super().do_GET()  # directory listings / index.html: plain behaviour
            else:
                super().do_HEAD()
            return
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError:
            self.send_error(404, "File not found")
            return
        try:
            size = os.fstat(f.fileno()).st_size
            wanted = parse_range(self.headers.get("Range"), size)
            if wanted == "unsatisfiable":
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if isinstance(wanted, tuple):
                first, last = wanted
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            else:
                first, last = 0, size - 1
                self.send_response(200)
            length = last - first + 1
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Content-Length", str(length))
            self.send_header("Last-Modified", self.date_time_string(int(os.fstat(f.fileno()).st_mtime)))
            self.end_headers()
            if body and length > 0:
                f.seek(first)
                self.copy_body(f, length)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client %s went away while %s was being sent", self.address_string(), path)
        finally:
            f.close()


class RunningServer:
    """A server running in a daemon thread; ``stop()`` (or leaving the ``with`` block) shuts it down."""

    def __init__(self, server: http.server.ThreadingHTTPServer, thread: threading.Thread, directory: Path) -> None:
        self._server = server
        self._thread = thread
        self.directory = directory
        host, port = server.server_address[:2]
        self.host = str(host)
        self.port = int(port)
        self.url = f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def start_server(
    directory: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    handler_class: type[RangeRequestHandler] = RangeRequestHandler,
) -> RunningServer:
    """Serve ``directory`` over HTTP on ``host:port`` (0 = a free port) in a daemon thread."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot serve {directory}: it is not a directory")

    handler = functools.partial(handler_class, directory=str(directory))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    # a short poll interval: stop() (shutdown) returns within 50 ms instead of 500
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"http-{directory.name}", daemon=True
    )
    thread.start()
    return RunningServer(server, thread, directory)


__all__ = ["RangeRequestHandler", "RunningServer", "parse_range", "start_server"]
