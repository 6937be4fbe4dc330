"""On a real Raspberry Pi only (marker ``device``; skipped elsewhere by conftest).

Run on the Pi:  .venv/bin/python -m pytest -m device device_tests/   (needs a camera and apt's
python3-picamera2 visible in the venv, i.e. a --system-site-packages venv)."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.device


def pi_model() -> str:
    return Path("/proc/device-tree/model").read_text(errors="replace").rstrip("\0")


def test_picamera2_zero_copy_lores_for_this_model() -> None:
    """The lores stream at model size, read as a zero-copy MappedArray (RGB on Pi 5, YUV420 on Pi 4)."""
    picamera2 = pytest.importorskip("picamera2")
    from picamera2 import MappedArray, Picamera2

    cam = Picamera2()
    pisp = "Raspberry Pi 5" in pi_model()
    lores = {"size": (320, 320), "format": "RGB888" if pisp else "YUV420"}
    config = cam.create_preview_configuration(main={"size": (640, 480)}, lores=lores, buffer_count=4)
    cam.align_configuration(config)
    cam.configure(config)
    cam.start()
    try:
        with cam.captured_request() as req, MappedArray(req, "lores") as m:
            arr = m.array
            assert arr.base is not None, "MappedArray gave a copy, not a view"
            w, h = config["lores"]["size"]
            assert arr.shape[:2] == ((h, w) if pisp else (h * 3 // 2, w))
    finally:
        cam.stop()
        cam.close()
    assert picamera2 is not None


def test_soc_temperature_is_plausible() -> None:
    milli = int(Path("/sys/class/thermal/thermal_zone0/temp").read_text())
    assert 0 < milli / 1000 < 90


def test_throttling_flags_are_readable() -> None:
    nodes = glob.glob("/sys/devices/platform/**/*firmware*/get_throttled", recursive=True)
    if nodes:
        value = int(Path(nodes[0]).read_text().strip(), 16)
    else:
        out = subprocess.run(["vcgencmd", "get_throttled"], text=True, capture_output=True, check=True).stdout
        value = int(out.strip().split("=")[1], 16)
    assert value & 0x1 == 0, f"under-voltage now (get_throttled=0x{value:x}): use the official power supply"


def test_ten_minute_run_on_the_camera() -> None:
    """The agent on the camera for 10 minutes: exits 0 and never stalls (frames keep coming)."""
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--duration", "600"],
        env={"EDGE_AGENT_SOURCE__TYPE": "picamera2", "PATH": "/usr/bin:/bin"},
        text=True,
        capture_output=True,
        timeout=700,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped after" in proc.stderr
