"""Log lines for systemd's journal: ``<N>`` priority prefixes (sd-daemon(3)) so ``journalctl -p warning`` works.

journald reads a service's stderr line by line; a line starting ``<N>`` (N = 0..7, syslog
priority) is stored at that priority, anything else at the unit's default (info). So under
the journal every line of a record, a traceback's lines too, carries its record's prefix.
``JOURNAL_STREAM`` (``<dev>:<inode>``) is how systemd tells a service that stderr is the
journal; it is inherited by children whose stderr may be a pipe, so the inode is compared.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

# sd-daemon(3) / syslog(3) priorities
SD_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"  # journald stamps every line itself: a second timestamp is noise


def sd_priority(levelno: int) -> int:
    """The syslog priority of a logging level (a level between two named ones takes the lower one's)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return SD_PRIORITY[level]
    return SD_PRIORITY[logging.DEBUG]


def stream_is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd announced in ``JOURNAL_STREAM``."""
    announced = (environ if environ is not None else os.environ).get("JOURNAL_STREAM", "")
    dev, _, ino = announced.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no real file descriptor (pytest capture, closed)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """Prefixes every line of a formatted record with ``<N>``, its syslog priority."""

    def __init__(self, fmt: str = JOURNAL_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{sd_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stderr_handler(fmt: str = "auto", stream: TextIO | None = None) -> logging.Handler:
    """The agent's log handler: ``journal`` (prefixes, no timestamp), ``plain`` (timestamps), or ``auto`` (detect)."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    journal = stream_is_journal(stream) if fmt == "auto" else fmt == "journal"
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(PLAIN_FORMAT))
    return handler


def error_text(text: str, stream: TextIO | None = None) -> str:
    """``text`` to print on ``stream`` (stderr) as an error: each line ``<3>``-prefixed under the journal, else unchanged."""
    if not stream_is_journal(stream if stream is not None else sys.stderr):
        return text
    return "\n".join(f"<{SD_PRIORITY[logging.ERROR]}>{line}" for line in text.split("\n"))
