"""Uploads whose pixel data is bigger than their header says: refused in milliseconds, the lane stays responsive.

A PNG header may say 100x100 while its zlib stream inflates to gigabytes; libpng inflates to the
end ("Too much image data"), 2 s of CPU per gigabyte. The oracle for the size we allow is libpng
itself (through OpenCV): for every PNG layout (colour type, bit depth, Adam7 interlace) a stream of
exactly that size decodes to the same pixels as the non-interlaced one, and one more row is refused.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib

import cv2
import httpx
import numpy as np
import pytest
from conftest import RunningAgent, wait_until

from agent.http.images import ADAM7_PASSES, MAX_JPEG_SCANS, UploadError, decode_upload

LIMITS = {"max_pixels": 16_000_000, "max_side": 8192}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, stream: bytes, depth: int = 8, color: int = 2, interlace: int = 0, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def _rows(samples: np.ndarray, depth: int) -> bytes:
    """Filter-0 rows of ``samples`` (h, w, channels) packed at ``depth`` bits, big-endian, MSB first."""
    out = []
    for row in samples.reshape(samples.shape[0], -1):
        if depth == 16:
            packed = row.astype(">u2").tobytes()
        elif depth == 8:
            packed = row.astype(np.uint8).tobytes()
        else:
            bits = (row[:, None] >> np.arange(depth - 1, -1, -1)) & 1
            packed = np.packbits(bits.astype(np.uint8).ravel()).tobytes()
        out.append(b"\x00" + packed)
    return b"".join(out)


def _pixel_stream(samples: np.ndarray, depth: int, interlace: int) -> bytes:
    if not interlace:
        return _rows(samples, depth)
    return b"".join(_rows(samples[y0::dy, x0::dx], depth) for x0, y0, dx, dy in ADAM7_PASSES if samples[y0::dy, x0::dx].size)


def bomb_png(width: int = 100, height: int = 100, inflated: int = 512 * 2**20) -> bytes:
    """A PNG header of ``width`` x ``height`` RGB whose zlib stream inflates to ``inflated`` bytes of zeros."""
    z = zlib.compressobj(9)
    block = b"\x00" * (16 * 2**20)
    stream = b"".join(z.compress(block) for _ in range(inflated // len(block))) + z.flush()
    return _png(width, height, stream)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = bomb_png()
    assert len(data) < 1_000_000  # half a megabyte on the wire, half a gigabyte inflated
    return data


LAYOUTS = [(c, d, i) for c, depths in {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}.items()
           for d in depths for i in (0, 1)]  # fmt: skip


@pytest.mark.parametrize(("color", "depth", "interlace"), LAYOUTS)
def test_every_png_layout_is_bounded_exactly(color: int, depth: int, interlace: int) -> None:
    width, height, channels = 13, 11, {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    rng = np.random.default_rng(depth * 10 + color)
    samples = rng.integers(0, 2**depth, (height, width, channels), dtype=np.uint32)
    extra = _chunk(b"PLTE", bytes(range(256)) * 3) if color == 3 else b""
    flat = cv2.imdecode(
        np.frombuffer(_png(width, height, zlib.compress(_pixel_stream(samples, depth, 0)), depth, color, 0, extra), np.uint8),
        cv2.IMREAD_COLOR,
    )
    stream = _pixel_stream(samples, depth, interlace)
    image = decode_upload(_png(width, height, zlib.compress(stream), depth, color, interlace, extra), "image/png", **LIMITS)
    assert np.array_equal(image, flat), "libpng decodes our exactly-sized stream to the same pixels"
    one_row_more = stream + stream[: len(stream) // height + 1]
    with pytest.raises(UploadError) as refused:
        decode_upload(_png(width, height, zlib.compress(one_row_more), depth, color, interlace, extra), "image/png", **LIMITS)
    assert (refused.value.status, refused.value.code) == (413, "image_too_large")
    with pytest.raises(UploadError) as short:
        decode_upload(_png(width, height, zlib.compress(stream[:-1]), depth, color, interlace, extra), "image/png", **LIMITS)
    assert (short.value.status, short.value.code) == (400, "truncated_image")


def test_a_png_bomb_is_refused_in_milliseconds(bomb: bytes) -> None:
    start = time.process_time()
    with pytest.raises(UploadError) as refused:
        decode_upload(bomb, "image/png", **LIMITS)
    spent = time.process_time() - start
    assert (refused.value.status, refused.value.code) == (413, "image_too_large") and "decompression bomb" in refused.value.detail
    assert spent < 0.05, f"{spent:.3f} s of CPU on a bomb (OpenCV alone spends about a second)"


def test_the_inflate_budget_is_a_deadline() -> None:
    # a legitimate 4000x3000 PNG inflates 36 MB: with a budget of a microsecond it is refused, not decoded
    noise = np.random.default_rng(1).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
    data = cv2.imencode(".png", noise)[1].tobytes()
    with pytest.raises(UploadError, match=r"http\.max_decode_s"):
        decode_upload(data, "image/png", **LIMITS, max_decode_s=1e-6)
    assert decode_upload(data, "image/png", **LIMITS).shape == (3000, 4000, 3)


def test_a_jpeg_with_too_many_scans_is_refused(scene_jpeg: bytes) -> None:
    sos = scene_jpeg.index(b"\xff\xda")
    length = struct.unpack(">H", scene_jpeg[sos + 2 : sos + 4])[0]
    eoi = scene_jpeg.rindex(b"\xff\xd9")
    scan = scene_jpeg[sos:eoi]  # one scan: the SOS header and its entropy-coded data
    many = scene_jpeg[:sos] + scan * (MAX_JPEG_SCANS + 1) + scene_jpeg[eoi:]
    assert length >= 8
    with pytest.raises(UploadError, match=f"more than {MAX_JPEG_SCANS} scans"):
        decode_upload(many, "image/jpeg", **LIMITS)


def test_four_clients_sending_bombs_do_not_stall_the_lane(agent: RunningAgent, bomb: bytes, scene_jpeg: bytes) -> None:
    stop = threading.Event()
    refusals: list[tuple[int, float]] = []

    def attacker() -> None:
        with agent.client() as c:
            while not stop.is_set():
                t0 = time.monotonic()
                r = c.post("/v1/detect", content=bomb, headers={"Content-Type": "image/png"})
                refusals.append((r.status_code, time.monotonic() - t0))

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(refusals) >= 8, 20), "the attackers' requests are answered"
        frames = agent.pipeline.stats.frames
        answered = []
        with agent.client() as c:
            for _ in range(5):  # an honest client among four attackers (max_pending_detects = 4): 503 may happen, rarely
                t0 = time.monotonic()
                r = c.post("/v1/detect", content=scene_jpeg, headers={"Content-Type": "image/jpeg"})
                answered.append((r.status_code, time.monotonic() - t0))
        assert wait_until(lambda: agent.pipeline.stats.frames > frames + 5, 5), "the camera pipeline keeps going"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert {code for code, _ in refusals} <= {413, 503}, refusals[:10]
    bomb_times = sorted(s for code, s in refusals if code == 413)
    assert bomb_times and bomb_times[len(bomb_times) // 2] < 0.5, f"median bomb refusal {bomb_times[len(bomb_times) // 2]:.2f} s"
    ok = [s for code, s in answered if code == 200]
    assert len(ok) >= 3, answered
    print(f"bombs refused: {len(refusals)}, median {bomb_times[len(bomb_times) // 2] * 1000:.0f} ms; honest detect {answered}")


def test_bomb_over_http_is_a_413(agent: RunningAgent, bomb: bytes) -> None:
    with agent.client() as c:
        r = c.post("/v1/detect", files={"image": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 413 and r.json()["error"] == "image_too_large", r.text
    assert isinstance(r, httpx.Response)
