"""Model versions and staged-rollout buckets: the rules registry and device must agree on."""

from __future__ import annotations

import hashlib
import re

_VERSION = re.compile(r"^\d{1,9}(\.\d{1,9}){0,3}$")


def parse_version(text: str, what: str = "version") -> tuple[int, ...]:
    """``"1.2.0"`` -> ``(1, 2, 0)``; trailing zeros do not count (``1.2`` == ``1.2.0``)."""
    if not isinstance(text, str) or not _VERSION.match(text):
        raise ValueError(f"{what} {text!r} is not a dotted numeric version such as 3 or 1.4.0 (up to four parts)")
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def is_valid_version(text: str) -> bool:
    try:
        parse_version(text)
    except ValueError:
        return False
    return True


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is lower than, equal to or higher than ``b``."""
    pa, pb = parse_version(a), parse_version(b)
    return (pa > pb) - (pa < pb)


def rollout_bucket(device_id: str, model: str) -> int:
    """The device's bucket 0..99 for ``model``: stable across restarts, independent between models."""
    digest = hashlib.sha256(f"{device_id}\x00{model}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def in_rollout(device_id: str, model: str, percent: float) -> bool:
    """A device takes a version when hash(device id, model) mod 100 < rollout percent."""
    return rollout_bucket(device_id, model) < percent
