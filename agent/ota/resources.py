"""Will the update fit? Disk, memory and clock checks made before a download and before loading a candidate.

Disk full and low RAM are the most common field failures of updaters (balena-supervisor #674,
#1575; balena-raspberrypi #503 on Pi 3A+), so both are checked up front with a margin, like
Greengrass's 20 MB floor. The clock matters because a Pi has no RTC: until NTP has synced, the
time can be the last shutdown's (fake-hwclock) or 1970, and TUF's expiry checks are then wrong.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from agent.ota.errors import ResourceError
from agent.ota.fsutil import disk_free, existing_ancestor

# Earliest plausible time: no agent built from this tree runs before it. Raise it with each release.
CLOCK_FLOOR = datetime(2026, 1, 1, tzinfo=UTC)
CLOCK_CEILING = datetime(2100, 1, 1, tzinfo=UTC)
DISK_MARGIN_BYTES = 20 * 2**20
RAM_MARGIN_BYTES = 32 * 2**20
MEMINFO = Path("/proc/meminfo")


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_disk(directory: Path | str, need_bytes: int, margin_bytes: int = DISK_MARGIN_BYTES) -> int:
    """Returns the free bytes; ResourceError(``disk_full``) unless ``need_bytes`` + ``margin_bytes`` fit in ``directory``."""
    where = existing_ancestor(directory)
    free = disk_free(where)
    if free < need_bytes + margin_bytes:
        raise ResourceError(
            f"not enough disk space in {directory}: {_mib(free)} free, the update needs {_mib(need_bytes)} plus a "
            f"{_mib(margin_bytes)} margin. Free space on the filesystem holding {where} (old logs, unused model "
            "versions) or give the state directory a bigger filesystem; the update is retried at the next check",
            reason="disk_full",
        )
    return free


def mem_available(meminfo: Path = MEMINFO) -> int | None:
    """The kernel's estimate of memory available without swapping (``MemAvailable``), in bytes; None if unknown."""
    try:
        text = meminfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                unit = fields[2].lower() if len(fields) > 2 else "kb"
                return int(fields[1]) * (1024 if unit == "kb" else 1)
    return None


def check_ram(
    model_bytes: int, factor: float = 2.0, margin_bytes: int = RAM_MARGIN_BYTES, *, meminfo: Path = MEMINFO
) -> int | None:
    """ResourceError(``low_memory``) unless a candidate of ``model_bytes`` can be loaded beside the serving model.

    The candidate needs about ``model_bytes * factor`` (file mapping, runtime arena, contexts) plus
    ``margin_bytes`` of headroom so the agent is not OOM-killed mid-swap. Returns MemAvailable, or
    None (and passes) where it cannot be read.
    """
    available = mem_available(meminfo)
    if available is None:
        return None
    need = model_bytes * factor + margin_bytes
    if available < need:
        raise ResourceError(
            f"not enough memory to load the new model beside the running one: {_mib(available)} available, about "
            f"{_mib(need)} needed ({_mib(model_bytes)} model x {factor:g} + {_mib(margin_bytes)} margin). Stop other "
            "services, use a smaller model, or lower update.ram_factor if this model needs less; retried at the next check",
            reason="low_memory",
        )
    return available


def clock_plausible(now: float | None = None) -> tuple[bool, str]:
    """Whether the system clock can be trusted for metadata expiry, and a sentence saying why (not)."""
    t = time.time() if now is None else now
    shown = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if -62e9 < t < 253e9 else f"{t:.0f} s"
    fix = (
        "A Raspberry Pi has no battery-backed clock: wait for NTP (order the agent after time-sync.target with "
        "systemd-time-wait-sync.service enabled, or check `timedatectl` and the NTP server)"
    )
    if t < CLOCK_FLOOR.timestamp():
        return False, f"system clock reads {shown}, before {CLOCK_FLOOR:%Y-%m-%d}: it has not been set. {fix}"
    if t >= CLOCK_CEILING.timestamp():
        return False, f"system clock reads {shown}, after {CLOCK_CEILING:%Y-%m-%d}: it is wrong. {fix}"
    return True, f"system clock reads {shown}"


__all__ = [
    "CLOCK_CEILING",
    "CLOCK_FLOOR",
    "DISK_MARGIN_BYTES",
    "RAM_MARGIN_BYTES",
    "check_disk",
    "check_ram",
    "clock_plausible",
    "mem_available",
]
