"""Bad uploads and missing tokens: clear 4xx with reasons, no stack traces, and the agent keeps running."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import httpx
import pytest
from conftest import TOKEN, RunningAgent, wait_until

PROTECTED = [("GET", "/metrics"), ("GET", "/v1/status"), ("POST", "/v1/detect"), ("GET", "/v1/snapshot")]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A real, valid PNG of ``width`` x ``height`` black RGB pixels: a few KB that decode to width*height*3 bytes."""
    row = b"\x00" * (1 + 3 * width)  # filter byte + pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int, real: bytes) -> bytes:
    """A real JPEG whose frame header (SOF) claims another size."""
    i = 2
    while real[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", real[i + 2 : i + 4])[0]
    return real[: i + 5] + struct.pack(">HH", height, width) + real[i + 9 :]


def _refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["detail"], body
    assert "Traceback" not in r.text and 'File "' not in r.text


@pytest.fixture(autouse=True)
def _agent_survives(agent: RunningAgent) -> Iterator[None]:
    frames = agent.pipeline.stats.frames
    yield
    assert agent.alive, "the pipeline stopped"
    with agent.client(None) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
    assert wait_until(lambda: agent.pipeline.stats.frames > frames, 5), "the pipeline stopped producing frames"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_token_required(agent: RunningAgent, method: str, path: str) -> None:
    with agent.client(None) as anon:
        r = anon.request(method, path)
        _refused(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    with agent.client("wrong-token-0123456789") as wrong:
        _refused(wrong.request(method, path), 401, "unauthorized")
    with httpx.Client(base_url=agent.base_url, headers={"Authorization": f"Basic {TOKEN}"}) as basic:
        _refused(basic.request(method, path), 401, "unauthorized")


def test_truncated_jpeg(client: httpx.Client, scene_jpeg: bytes) -> None:
    for cut in (len(scene_jpeg) - 2, len(scene_jpeg) // 2, 200, 4):
        _refused(
            client.post("/v1/detect", content=scene_jpeg[:cut], headers={"Content-Type": "image/jpeg"}), 400, "truncated_image"
        )


def test_truncated_png(client: httpx.Client) -> None:
    png = png_bomb(64, 64)
    _refused(client.post("/v1/detect", content=png[:-20], headers={"Content-Type": "image/png"}), 400, "truncated_image")


def test_wrong_content_types(client: httpx.Client, scene_jpeg: bytes) -> None:
    _refused(client.post("/v1/detect", content=scene_jpeg, headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    _refused(client.post("/v1/detect", content=scene_jpeg), 415, "unsupported_media_type")  # no content type at all
    _refused(client.post("/v1/detect", content=scene_jpeg, headers={"Content-Type": "image/png"}), 415, "type_mismatch")
    _refused(
        client.post("/v1/detect", content=b"GIF89a" + b"\0" * 64, headers={"Content-Type": "image/jpeg"}), 415, "not_an_image"
    )
    r = client.post("/v1/detect", files={"image": ("x.gif", b"GIF89a", "image/gif")})
    _refused(r, 415, "unsupported_media_type")
    _refused(client.post("/v1/detect", files={"other": ("x.jpg", scene_jpeg, "image/jpeg")}), 400, "missing_image")
    _refused(client.post("/v1/detect", content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty_body")


def test_decompression_bomb_refused_from_the_header(client: httpx.Client) -> None:
    bomb = png_bomb(6000, 6000)  # 36 Mpx, 108 MB of pixels
    assert len(bomb) < 200_000
    _refused(client.post("/v1/detect", content=bomb, headers={"Content-Type": "image/png"}), 413, "image_too_large")
    _refused(client.post("/v1/detect", files={"image": ("b.png", bomb, "image/png")}), 413, "image_too_large")


def test_huge_declared_dimensions(client: httpx.Client, scene_jpeg: bytes) -> None:
    for w, h in ((60000, 60000), (9000, 10), (5000, 5000)):
        fake = jpeg_claiming(w, h, scene_jpeg)
        _refused(client.post("/v1/detect", content=fake, headers={"Content-Type": "image/jpeg"}), 413, "image_too_large")
    _refused(
        client.post("/v1/detect", content=jpeg_claiming(0, 10, scene_jpeg), headers={"Content-Type": "image/jpeg"}),
        400,
        "invalid_image",
    )


def test_too_many_bytes(client: httpx.Client, agent: RunningAgent, scene_jpeg: bytes) -> None:
    limit = agent.server.config.max_upload_bytes
    big = scene_jpeg + b"\0" * (limit + 1)
    _refused(client.post("/v1/detect", content=big, headers={"Content-Type": "image/jpeg"}), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed count must stop it
        yield scene_jpeg
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    _refused(client.post("/v1/detect", content=chunks(), headers={"Content-Type": "image/jpeg"}), 413, "body_too_large")
    _refused(client.post("/v1/detect", files={"image": ("big.jpg", big, "image/jpeg")}), 413, "body_too_large")


def test_garbage_after_a_valid_header(client: httpx.Client, scene_jpeg: bytes) -> None:
    # header and markers intact, entropy-coded data scrambled: decodes to noise or fails, never 5xx
    mangled = scene_jpeg[:700] + bytes(b ^ 0x5A if b not in (0xFF, 0x00) else b for b in scene_jpeg[700:-2]) + scene_jpeg[-2:]
    r = client.post("/v1/detect", content=mangled, headers={"Content-Type": "image/jpeg"})
    assert r.status_code in (200, 400), r.text


def test_unknown_route_and_bad_query(client: httpx.Client, scene_jpeg: bytes) -> None:
    _refused(client.get("/v2/nothing"), 404, "not_found")
    _refused(
        client.post("/v1/detect?annotated=maybe", content=scene_jpeg, headers={"Content-Type": "image/jpeg"}),
        422,
        "invalid_request",
    )
    _refused(client.delete("/v1/status"), 405, "method_not_allowed")
