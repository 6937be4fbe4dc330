"""Checking an uploaded image before any decoder sees it: type, dimensions, completeness.

Pure functions over bytes (no I/O), so every refusal is tested without a server. The
dimensions come from the file header (PNG IHDR, JPEG SOF), so a decompression bomb — a few
kilobytes declaring a gigapixel — is refused before a single pixel is allocated.

The header alone is not enough: a PNG may declare 100x100 and carry a zlib stream that inflates
to gigabytes, which libpng inflates to the end ("Too much image data") for seconds of CPU. So the
PNG's pixel stream is inflated here first, in bounded steps and without keeping the output, and
refused once it yields more bytes than the header's size allows or takes longer than
``max_decode_s``. A JPEG's decode work grows with its scan count, so scans are capped too.
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

JPEG = "image/jpeg"
PNG = "image/png"
ACCEPTED_TYPES = (JPEG, PNG)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# JPEG start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length
_SOS = 0xDA
# a progressive JPEG has about 10 scans; each scan makes libjpeg revisit every coefficient of the image
MAX_JPEG_SCANS = 100
# PNG colour type -> samples per pixel, and the bit depths the spec allows for it
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}
# Adam7 interlace passes: x0, y0, dx, dy
ADAM7_PASSES = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20  # output bytes per zlib call: bounded memory, and a deadline check between steps


class UploadError(Exception):
    """An upload the API refuses; ``status`` is the HTTP status, ``code`` a stable machine-readable reason."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ImageHeader:
    media_type: str
    width: int
    height: int
    pixel_stream_bytes: int = 0  # PNG: the inflated size the header implies (filter bytes included)


def sniff_type(data: bytes) -> str | None:
    """``image/jpeg`` or ``image/png`` from the magic bytes, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(_PNG_SIGNATURE):
        return PNG
    return None


def check_declared_type(declared: str | None) -> str:
    """The declared media type without parameters; 415 unless it is JPEG or PNG."""
    media = (declared or "").split(";", 1)[0].strip().lower()
    if media not in ACCEPTED_TYPES:
        raise UploadError(
            415, "unsupported_media_type", f"content type {media or '(none)'!r} is not accepted; send image/jpeg or image/png"
        )
    return media


def _png_stream_bytes(width: int, height: int, depth: int, color: int, interlace: int) -> int:
    """Bytes the PNG's zlib stream inflates to: one filter byte per row plus the packed samples."""
    bits = _PNG_CHANNELS[color] * depth

    def rows(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w > 0 and h > 0 else 0

    if interlace == 0:
        return rows(width, height)
    return sum(rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in ADAM7_PASSES)


def _png_header(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise UploadError(400, "truncated_image", "the PNG ends before its IHDR header")
    width, height, depth, color, _compression, _filter, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if not data.rstrip(b"\x00").endswith(_PNG_IEND):
        raise UploadError(400, "truncated_image", "the PNG has no IEND chunk at its end: the file is truncated")
    if color not in _PNG_CHANNELS or depth not in _PNG_DEPTHS[color] or interlace not in (0, 1):
        raise UploadError(
            400, "invalid_image", f"the PNG header is invalid (colour type {color}, bit depth {depth}, interlace {interlace})"
        )
    return ImageHeader(PNG, width, height, _png_stream_bytes(width, height, depth, color, interlace))


def _png_idat(data: bytes) -> list[memoryview]:
    """The IDAT chunks' payloads, in order (the zlib stream of the pixels)."""
    view, pos, parts = memoryview(data), 8, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if pos + 12 + length > len(data):
            raise UploadError(400, "truncated_image", f"the PNG's {kind!r} chunk runs past the end of the file: truncated")
        if kind == b"IDAT":
            parts.append(view[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    if not parts:
        raise UploadError(400, "invalid_image", "the PNG has no IDAT chunk (no pixel data)")
    return parts


def check_png_stream(data: bytes, header: ImageHeader, max_decode_s: float) -> None:
    """Inflate the pixel stream in bounded steps: 413 once it exceeds the header's size or the time budget."""
    expected = header.pixel_stream_bytes
    inflater = zlib.decompressobj()
    produced = 0
    deadline = time.monotonic() + max_decode_s
    for part in _png_idat(data):
        pending: bytes | memoryview = part
        while True:
            try:
                out = inflater.decompress(pending, min(_INFLATE_STEP, expected - produced + 1))
            except zlib.error as exc:
                raise UploadError(400, "invalid_image", f"the PNG's pixel data is not a valid zlib stream ({exc})") from None
            produced += len(out)
            if produced > expected:
                raise UploadError(
                    413,
                    "image_too_large",
                    f"the PNG's pixel data inflates past the {expected} bytes its {header.width}x{header.height} header "
                    "allows (a decompression bomb); re-encode the image",
                )
            if time.monotonic() > deadline:
                raise UploadError(
                    413,
                    "image_too_large",
                    f"the PNG's pixel data takes longer than {max_decode_s} s to inflate (http.max_decode_s)",
                )
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and not out):
                break
        if inflater.eof:
            break
    if produced < expected:
        raise UploadError(
            400, "truncated_image", f"the PNG's pixel data ends after {produced} of {expected} bytes: the file is truncated"
        )


def _jpeg_header(data: bytes) -> ImageHeader:
    """Walk the JPEG's marker segments: the frame size from SOF, and proof of an EOI after the last scan."""
    n = len(data)
    pos = 2
    size: tuple[int, int] | None = None
    scans = 0
    while True:
        # find the next marker: skip fill bytes (0xFF runs); inside a scan, skip stuffed FF00 and RSTn
        pos = data.find(b"\xff", pos)  # C-speed jump over entropy-coded data
        if pos < 0:
            pos = n
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise UploadError(400, "truncated_image", "the JPEG ends before its end-of-image marker: the file is truncated")
        marker = data[pos]
        pos += 1
        if marker == 0x00 or marker in _STANDALONE:
            continue  # stuffed byte or restart marker inside entropy-coded data
        if marker == 0xD9:  # EOI
            if size is None:
                raise UploadError(400, "invalid_image", "the JPEG has no frame header (SOF)")
            return ImageHeader(JPEG, size[0], size[1])
        if pos + 2 > n:
            raise UploadError(400, "truncated_image", "the JPEG ends inside a segment header: the file is truncated")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > n:
            raise UploadError(400, "truncated_image", "the JPEG ends inside a segment: the file is truncated")
        if marker == _SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise UploadError(
                    413,
                    "image_too_large",
                    f"the JPEG has more than {MAX_JPEG_SCANS} scans; re-encode it (baseline or progressive)",
                )
        if marker in _SOF_MARKERS and length >= 7:
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            size = (width, height)
        pos += length  # for SOS the entropy-coded data follows; the scan above skips it


def read_header(data: bytes, declared: str | None) -> ImageHeader:
    """Check the declared type, the magic bytes and the header; 4xx :class:`UploadError` on any mismatch."""
    media = check_declared_type(declared)
    if not data:
        raise UploadError(400, "empty_body", "the request carries no image bytes")
    actual = sniff_type(data)
    if actual is None:
        raise UploadError(415, "not_an_image", "the bytes are neither JPEG nor PNG (bad magic number)")
    if actual != media:
        raise UploadError(415, "type_mismatch", f"declared {media} but the bytes are {actual}")
    return _png_header(data) if actual == PNG else _jpeg_header(data)


def check_dimensions(header: ImageHeader, max_pixels: int, max_side: int) -> None:
    if header.width < 1 or header.height < 1:
        raise UploadError(400, "invalid_image", f"the image declares {header.width}x{header.height} pixels")
    if header.width > max_side or header.height > max_side:
        raise UploadError(
            413,
            "image_too_large",
            f"{header.width}x{header.height} exceeds the largest side of {max_side} pixels (http.max_side)",
        )
    if header.width * header.height > max_pixels:
        raise UploadError(
            413,
            "image_too_large",
            f"{header.width}x{header.height} = {header.width * header.height} pixels exceeds {max_pixels} (http.max_pixels); "
            "scale the image down before sending it",
        )


def decode_upload(data: bytes, declared: str | None, max_pixels: int, max_side: int, max_decode_s: float = 2.0) -> np.ndarray:
    """The upload as a BGR array, or a 4xx :class:`UploadError` saying what is wrong with it.

    Decoded bytes are bounded by the header's dimensions (checked against ``max_pixels``/``max_side``)
    and, for a PNG, by inflating its pixel stream up to what those dimensions allow before OpenCV does.
    """
    header = read_header(data, declared)
    check_dimensions(header, max_pixels, max_side)
    if header.media_type == PNG:
        check_png_stream(data, header, max_decode_s)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UploadError(400, "invalid_image", f"the {header.media_type} header is valid but its pixel data does not decode")
    if sorted(image.shape[:2]) != sorted((header.width, header.height)):  # EXIF may rotate; any other size was not bounded
        raise UploadError(400, "invalid_image", f"the header says {header.width}x{header.height} but the pixels decode otherwise")
    return image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any 8-bit BGR image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
