"""A minimal read-only FlatBuffers table reader (the device has no flatbuffers schema code for TFLite Metadata).

Only what the model-metadata reader needs: tables, scalars, strings, byte and float vectors, vectors of
tables and union values. Every offset is bounds-checked, so a corrupt file raises :class:`FlatbufferError`
instead of reading garbage or running away.
"""

from __future__ import annotations

import struct
from typing import Any


class FlatbufferError(ValueError):
    """The bytes are not the flatbuffer they claim to be."""


def _unpack(fmt: str, buf: Any, pos: int) -> Any:
    if pos < 0:  # struct would count a negative offset from the end: a corrupt offset, not a position
        raise FlatbufferError(f"offset {pos} points before the buffer's start")
    try:
        return struct.unpack_from("<" + fmt, buf, pos)[0]
    except struct.error:
        raise FlatbufferError(f"offset {pos} is outside the {len(buf)}-byte buffer") from None


class Table:
    """One table at byte ``pos`` of ``buf``; fields are addressed by their schema slot (0, 1, 2, ...)."""

    def __init__(self, buf: Any, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - _unpack("i", buf, pos)
        self.vtable_size = _unpack("H", buf, self.vtable)
        if self.vtable_size < 4 or self.vtable_size % 2:
            raise FlatbufferError(f"bad vtable at offset {self.vtable}")

    def _field(self, slot: int) -> int:
        """Absolute position of field ``slot``, or 0 when the table does not set it."""
        entry = 4 + 2 * slot
        if entry >= self.vtable_size:
            return 0
        offset = _unpack("H", self.buf, self.vtable + entry)
        return self.pos + offset if offset else 0

    def _indirect(self, slot: int) -> int:
        at = self._field(slot)
        return at + _unpack("I", self.buf, at) if at else 0

    def scalar(self, slot: int, fmt: str, default: int = 0) -> Any:
        at = self._field(slot)
        return _unpack(fmt, self.buf, at) if at else default

    def _vector(self, slot: int) -> tuple[int, int]:
        """``(start, length)`` of a vector field; ``(0, 0)`` when unset."""
        at = self._indirect(slot)
        if not at:
            return 0, 0
        length = _unpack("I", self.buf, at)
        if at + 4 + length > len(self.buf):
            raise FlatbufferError(f"vector at offset {at} claims {length} elements past the buffer's end")
        return at + 4, length

    def bytes(self, slot: int) -> bytes:
        start, length = self._vector(slot)
        return bytes(self.buf[start : start + length])

    def string(self, slot: int) -> str | None:
        at = self._indirect(slot)
        return self.bytes(slot).decode("utf-8", "replace") if at else None

    def floats(self, slot: int) -> tuple[float, ...]:
        start, length = self._vector(slot)
        if start + 4 * length > len(self.buf):
            raise FlatbufferError(f"float vector at offset {start} runs past the buffer's end")
        return tuple(float(v) for v in struct.unpack_from(f"<{length}f", self.buf, start)) if length else ()

    def tables(self, slot: int) -> list[Table]:
        start, length = self._vector(slot)
        if start + 4 * length > len(self.buf):
            raise FlatbufferError(f"table vector at offset {start} runs past the buffer's end")
        return [Table(self.buf, start + 4 * i + _unpack("I", self.buf, start + 4 * i)) for i in range(length)]

    def table(self, slot: int) -> Table | None:
        at = self._indirect(slot)
        return Table(self.buf, at) if at else None

    def union(self, slot: int) -> Table:
        """The table a union field points at (its type sits in the slot before it)."""
        found = self.table(slot)
        if found is None:
            raise FlatbufferError(f"union field {slot} is declared but empty")
        return found


def root_table(buf: Any, pos: int, identifier: bytes | None = None) -> Table:
    """The root table of a flatbuffer starting at ``pos``; checks the 4-byte file identifier when given."""
    if identifier is not None and bytes(buf[pos + 4 : pos + 8]) != identifier:
        raise FlatbufferError(f"file identifier is {bytes(buf[pos + 4 : pos + 8])!r}, expected {identifier!r}")
    return Table(buf, pos + _unpack("I", buf, pos))
