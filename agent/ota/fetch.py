"""Fetching an offered artifact: its URL on the registry, the resumable download, the final check.

The length and sha256 come from the targets metadata python-tuf verified; the download is
checked against them while it streams (download.py) and once more, as a whole file, here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.ota.errors import DownloadError
from agent.ota.policy import Offer

if TYPE_CHECKING:
    import threading

    from agent.config import UpdateConfig

Progress = Callable[[float, bool], None]  # (fraction done, final) -> None
PROGRESS_EVERY_S = 1.0


def target_url(base_url: str, offer: Offer, consistent_snapshot: bool) -> str:
    """Where the artifact lives: ``<url>/targets/<dir>/[<sha256>.]<name>`` (TUF's consistent-snapshot naming)."""
    directory, _, name = offer.path.rpartition("/")
    if consistent_snapshot:
        name = f"{offer.info.hashes['sha256']}.{name}"
    base = f"{base_url.rstrip('/')}/targets"
    return f"{base}/{directory}/{name}" if directory else f"{base}/{name}"


def download(
    offer: Offer,
    part: Path,
    url: str,
    cfg: UpdateConfig,
    stop: threading.Event,
    *,
    progress: Progress,
    first_chunk: Callable[[], None] = lambda: None,
) -> None:
    """Download (or resume) ``offer`` into ``part``; ``progress`` is called at most once a second and at the end."""
    from agent.ota.download import download_resumable

    last = [0.0]
    started = [False]

    def on_progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or done == total:
            last[0] = now
            progress(done / total if total else 1.0, done == total)

    def on_chunk(_done: int) -> None:
        if not started[0]:
            started[0] = True
            first_chunk()

    download_resumable(
        url,
        part,
        length=offer.info.length,
        sha256=offer.info.hashes["sha256"],
        progress=on_progress,
        timeout_s=cfg.download_timeout_s,
        retries=cfg.download_retries,
        stop=stop,
        on_chunk=on_chunk,
    )


def verify(offer: Offer, part: Path) -> None:
    """The whole file against the signed length and hashes; a mismatch deletes it."""
    from tuf.api.exceptions import LengthOrHashMismatchError

    try:
        with part.open("rb") as f:
            offer.info.verify_length_and_hashes(f)
    except LengthOrHashMismatchError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{offer.path}: {exc}; the download was deleted", "hash_mismatch") from None
