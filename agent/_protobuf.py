"""A minimal protobuf wire-format scanner: the fields of one message, without a schema or the protobuf package.

Enough to read an ONNX ``ModelProto``'s top level (``metadata_props`` and a few strings) while skipping its graph,
however large, by its length prefix. Malformed input raises ``ValueError`` naming the field and byte offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def message_fields(buf: Any, start: int, end: int) -> Iterator[tuple[int, int | memoryview]]:
    """``(field number, value)`` of one protobuf message: ints for varints/fixed, memoryviews for LEN fields."""
    view = memoryview(buf)
    pos = start
    while pos < end:
        key, pos = varint(view, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(view, pos, end)
            yield number, value
        elif wire == 2:
            size, pos = varint(view, pos, end)
            if pos + size > end:
                raise ValueError(f"field {number} runs past the end of the file (truncated?)")
            yield number, view[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise ValueError(f"field {number} runs past the end of the file (truncated?)")
            yield number, int.from_bytes(view[pos : pos + width], "little")
            pos += width
        else:
            raise ValueError(f"field {number} has unsupported wire type {wire} at byte {pos}")


def varint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 70:
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise ValueError(f"bad varint at byte {pos}")
