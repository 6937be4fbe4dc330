"""Disk ballast: a file that holds a little space in reserve, given back when the disk is full.

On a full SD card the outbox cannot commit even the few pages that reserve message ids, and
without a reservation no message may be numbered (a seq must never be handed out twice). The
ballast (``<outbox>.ballast``, 256 KiB) is released at that moment, so the reservation can be
committed and messages go out without durability instead of being dropped; it is made again
once writes work.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BALLAST_BYTES = 256 * 1024


class Ballast:
    """``keep`` makes the file when there is room; ``spend`` deletes it (True when there was one to give)."""

    def __init__(self, path: Path, size: int = BALLAST_BYTES) -> None:
        self.path = path
        self.size = size

    def keep(self) -> None:
        if self.path.exists():
            return
        try:
            with self.path.open("wb") as fh:
                fh.write(b"\0" * self.size)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            self.path.unlink(missing_ok=True)  # no room for it now: made again once writes work

    def spend(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk full: released the %d KiB ballast %s", self.size // 1024, self.path)
        return True
