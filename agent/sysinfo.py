"""What the machine says about itself, read from /proc and /sys (no psutil, no forks).

Every reader returns None where the file is absent (macOS, containers, CI), never 0: a
missing SoC temperature is "unknown", not "cold". Roots are parameters so tests can point
them at a fake tree.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
SYS = Path("/sys")

# vcgencmd get_throttled bits (Raspberry Pi documentation, "get_throttled")
THROTTLE_BITS = {
    "under_voltage": 0,
    "freq_capped": 1,
    "throttled": 2,
    "soft_temp_limit": 3,
    "under_voltage_occurred": 16,
    "freq_capped_occurred": 17,
    "throttled_occurred": 18,
    "soft_temp_limit_occurred": 19,
}
# thermal zone types of the SoC sensor, best first (Pi: cpu-thermal; other ARM boards; x86 package)
_SOC_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "soc-thermal", "soc_thermal", "x86_pkg_temp")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


@dataclass(slots=True)
class CpuTimes:
    """Cumulative CPU seconds of this process and jiffies of the whole machine, for deltas."""

    process_s: float
    wall_s: float
    system_busy: int | None
    system_total: int | None


def cpu_times(proc: Path = PROC) -> CpuTimes:
    import time

    t = os.times()
    busy = total = None
    line = _read(proc / "stat")
    if line:
        fields = line.splitlines()[0].split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            total = sum(values)
            busy = total - values[3] - (values[4] if len(values) > 4 else 0)
    return CpuTimes(t.user + t.system, time.monotonic(), busy, total)


def cpu_percent(before: CpuTimes, after: CpuTimes) -> tuple[float | None, float | None]:
    """(process %, where 100 = one core busy; system %, 0..100 over all cores) between two samples."""
    wall = after.wall_s - before.wall_s
    process = 100.0 * (after.process_s - before.process_s) / wall if wall > 0 else None
    system = None
    if None not in (before.system_busy, before.system_total, after.system_busy, after.system_total):
        d_total = after.system_total - before.system_total  # type: ignore[operator]
        if d_total > 0:
            system = 100.0 * (after.system_busy - before.system_busy) / d_total  # type: ignore[operator]
    return process, system


def rss_bytes(proc: Path = PROC) -> int | None:
    """Resident set size of this process."""
    text = _read(proc / "self" / "statm")
    if not text:
        return None
    try:
        return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (IndexError, ValueError, OSError):
        return None


def mem_available_bytes(proc: Path = PROC) -> int | None:
    text = _read(proc / "meminfo")
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def soc_temperature_c(sys_root: Path = SYS) -> float | None:
    """The SoC temperature in °C from the thermal zone typed like the SoC sensor, else None."""
    zones = sorted((sys_root / "class" / "thermal").glob("thermal_zone*"))
    by_type = {(_read(z / "type") or ""): z for z in zones}
    for kind in _SOC_ZONE_TYPES:
        zone = by_type.get(kind)
        if zone is not None:
            raw = _read(zone / "temp")
            try:
                return int(raw) / 1000.0 if raw else None
            except ValueError:
                return None
    return None


def find_throttled_node(sys_root: Path = SYS) -> Path | None:
    """The firmware's get_throttled node (its path differs across Pi models and kernels); glob once."""
    platform = sys_root / "devices" / "platform"
    if not platform.is_dir():
        return None
    for pattern in ("soc/*firmware*/get_throttled", "*firmware*/get_throttled", "**/*firmware*/get_throttled"):
        for node in platform.glob(pattern):
            return node
    return None


def throttled_flags(node: Path | None) -> dict[str, bool | int] | None:
    """The get_throttled word decoded: ``raw`` plus one bool per documented bit; None when absent."""
    if node is None:
        return None
    text = _read(node)
    if not text:
        return None
    try:
        raw = int(text.removeprefix("throttled=").strip(), 16)
    except ValueError:
        return None
    flags: dict[str, bool | int] = {"raw": raw}
    flags.update({name: bool(raw >> bit & 1) for name, bit in THROTTLE_BITS.items()})
    return flags


def free_disk_bytes(path: Path) -> int | None:
    """Free bytes (for an unprivileged writer) on the filesystem holding ``path`` or its nearest existing parent."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None
