"""agent/ota/resources.py: disk, memory and clock checks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.ota.errors import ResourceError
from agent.ota.resources import CLOCK_FLOOR, check_disk, check_ram, clock_plausible, mem_available
from tests.ota._store_helpers import small_tmpfs

MiB = 2**20


def test_check_disk_on_a_small_filesystem(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "4m") as small:
        staging = small / "ota" / "staging" / "shapes" / "2.0"  # not created yet: its filesystem counts
        assert check_disk(staging, 1 * MiB, margin_bytes=1 * MiB) > 3 * MiB
        with pytest.raises(ResourceError) as info:
            check_disk(staging, 3 * MiB, margin_bytes=2 * MiB)
        err = info.value
        assert err.reason == "disk_full"
        msg = str(err)
        assert str(staging) in msg and "4.0 MiB free" in msg and "3.0 MiB" in msg and "2.0 MiB margin" in msg


def test_check_disk_default_margin_is_20_mib(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "16m") as small, pytest.raises(ResourceError, match=r"20\.0 MiB margin"):
        check_disk(small, 0)


def test_mem_available_reads_proc_meminfo(tmp_path: Path) -> None:
    real = mem_available()
    if Path("/proc/meminfo").exists():
        assert real is not None and real > 16 * MiB
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:        3884200 kB\nMemFree:          120000 kB\nMemAvailable:     204800 kB\n")
    assert mem_available(fake) == 204800 * 1024
    fake.write_text("MemTotal:        3884200 kB\n")  # kernels before 3.14 have no MemAvailable
    assert mem_available(fake) is None
    assert mem_available(tmp_path / "missing") is None


def test_check_ram(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemAvailable: {200 * 1024} kB\n")  # 200 MiB, a busy Pi 3
    assert check_ram(50 * MiB, meminfo=meminfo) == 200 * MiB  # 50 x 2 + 32 fits
    with pytest.raises(ResourceError) as info:
        check_ram(90 * MiB, meminfo=meminfo)  # 90 x 2 + 32 = 212 does not
    assert info.value.reason == "low_memory"
    assert "200.0 MiB available" in str(info.value) and "212.0 MiB" in str(info.value)
    assert check_ram(90 * MiB, factor=1.5, meminfo=meminfo) == 200 * MiB
    assert check_ram(10**12, meminfo=tmp_path / "missing") is None  # unknown: do not block updates


@pytest.mark.parametrize(
    ("when", "ok"),
    [
        (0.0, False),  # 1970: no RTC, no NTP yet
        (datetime(2025, 12, 31, 23, 59, tzinfo=UTC).timestamp(), False),  # before this build could exist
        (CLOCK_FLOOR.timestamp(), True),
        (datetime(2027, 6, 1, tzinfo=UTC).timestamp(), True),
        (datetime(2100, 1, 1, tzinfo=UTC).timestamp(), False),
        (1e13, False),  # far future, beyond what datetime shows
    ],
)
def test_clock_plausible(when: float, ok: bool) -> None:
    plausible, why = clock_plausible(when)
    assert plausible is ok
    if not ok:
        assert "systemd-time-wait-sync" in why and "NTP" in why


def test_clock_plausible_now() -> None:
    plausible, why = clock_plausible()
    assert plausible, why  # the machine running the tests has a set clock
