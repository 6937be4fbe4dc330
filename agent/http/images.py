"""Checking an uploaded image before any decoder sees it: type, dimensions, completeness.

Pure functions over bytes (no I/O), so every refusal is tested without a server. The
dimensions come from the file header (PNG IHDR, JPEG SOF), so a decompression bomb — a few
kilobytes declaring a gigapixel — is refused before a single pixel is allocated.
"""

from __future__ import annotations

import struct
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


def _png_header(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise UploadError(400, "truncated_image", "the PNG ends before its IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    if not data.rstrip(b"\x00").endswith(_PNG_IEND):
        raise UploadError(400, "truncated_image", "the PNG has no IEND chunk at its end: the file is truncated")
    return ImageHeader(PNG, width, height)


def _jpeg_header(data: bytes) -> ImageHeader:
    """Walk the JPEG's marker segments: the frame size from SOF, and proof of an EOI after the last scan."""
    n = len(data)
    pos = 2
    size: tuple[int, int] | None = None
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


def decode_upload(data: bytes, declared: str | None, max_pixels: int, max_side: int) -> np.ndarray:
    """The upload as a BGR array, or a 4xx :class:`UploadError` saying what is wrong with it."""
    header = read_header(data, declared)
    check_dimensions(header, max_pixels, max_side)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UploadError(400, "invalid_image", f"the {header.media_type} header is valid but its pixel data does not decode")
    return image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any 8-bit BGR image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
