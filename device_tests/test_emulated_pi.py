"""An emulated Raspberry Pi: a debootstrapped arm64 bookworm run through qemu-user-static
(binfmt_misc), where scripts/install.sh installs the wheel the way a Pi user would, then the
agent runs the demo model on a video file and its detections reach the host's MQTT broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from device_tests._rootfs import REPO, Chroot, Overlay, host_setup

pytestmark = pytest.mark.slow


def make_video(path: Path, frames: int = 24) -> None:
    """An MJPG file from the demo model's self-test scenes (known objects in them)."""
    scenes = sorted((REPO / "models/demo/selftest").glob("scene_*.jpg"))
    first = cv2.imread(str(scenes[0]))
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for i in range(frames):
        img = cv2.imread(str(scenes[i % len(scenes)]))
        writer.write(cv2.resize(img, (w, h)))
    writer.release()
    assert path.stat().st_size > 0


@pytest.fixture(scope="module")
def pi(host_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chroot, str]]:
    host_setup("binfmt")
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)], check=True)
    wheel = next(dist.glob("edge_agent-*.whl"))
    ov = Overlay("arm64")
    try:
        ch = Chroot(ov)
        assert ch.run("uname -m; dpkg --print-architecture").stdout.split() == ["aarch64", "arm64"]
        # what a Pi user downloads: install.sh, its tested pip constraints and the wheel, side by side
        home = ov.root / "home/pi"
        home.mkdir(parents=True)
        (home / "install.sh").write_bytes((REPO / "scripts/install.sh").read_bytes())
        (home / "pi-constraints.txt").write_bytes((REPO / "scripts/pi-constraints.txt").read_bytes())
        (home / wheel.name).write_bytes(wheel.read_bytes())
        make_video(home / "demo.avi")
        t0 = time.monotonic()
        out = ch.run("bash /home/pi/install.sh", timeout=2400).stdout
        print(f"install.sh under qemu took {time.monotonic() - t0:.0f} s\n{out[-2500:]}")
        yield ch, out
    finally:
        ov.close()


def test_install_script_in_the_emulated_pi(pi: tuple[Chroot, str]) -> None:
    ch, out = pi
    assert "platform: Debian GNU/Linux 12 (bookworm) (arm64)" in out
    assert "systemd is not running here" in out  # a chroot: enabled for the next boot
    listing = ch.run(
        "readlink -f /etc/systemd/system/multi-user.target.wants/edge-agent.service; "
        "grep ^ExecStart= /etc/systemd/system/edge-agent.service; stat -c '%U:%G %a' /etc/edge-agent/config.yaml; "
        "/opt/edge-agent/venv/bin/python -c 'import sys; print(sys.flags.no_site, sys.prefix)'; "
        "grep include-system-site-packages /opt/edge-agent/venv/pyvenv.cfg"
    ).stdout
    assert "/etc/systemd/system/edge-agent.service" in listing
    assert "ExecStart=/opt/edge-agent/venv/bin/edge-agent run" in listing
    assert "root:edge-agent 640" in listing
    assert "include-system-site-packages = true" in listing


# issue 16: the device venv was 484 MiB with both runtimes always installed; LiteRT alone must fit in this
MAX_VENV_MIB = 300


def test_install_size_and_tested_bounds(pi: tuple[Chroot, str]) -> None:
    """The arm64 venv's size (printed), LiteRT only by default, every version within pi-constraints.txt."""
    ch, out = pi
    assert "pip constraints: the tested upper bounds in /home/pi/pi-constraints.txt" in out
    venv = "/opt/edge-agent/venv"
    total = int(ch.run(f"du -sm {venv} | cut -f1").stdout.strip())
    apparent = int(ch.run(f"du -sm --apparent-size {venv} | cut -f1").stdout.strip())
    biggest = ch.run(f"du -sm {venv}/lib/python3*/site-packages/* | sort -rn | sed -n 1,10p").stdout  # sed: no SIGPIPE
    print(f"arm64 device venv: {total} MiB on disk, {apparent} MiB of file contents (LiteRT only)\nlargest:\n{biggest}")
    listed = json.loads(ch.run(f"{venv}/bin/python -m pip list --format json --disable-pip-version-check").stdout)
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in listed}
    print("versions: " + ", ".join(f"{n} {installed[n]}" for n in ("numpy", "opencv-python-headless", "ai-edge-litert")))
    assert "onnxruntime" not in installed, "the default install takes LiteRT only (edge-agent[onnx] adds ONNX Runtime)"
    check = ch.run(f"{venv}/bin/python -m pip check --disable-pip-version-check", check=False)
    assert check.returncode == 0, check.stdout
    from packaging.requirements import Requirement

    for line in (REPO / "scripts/pi-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            bound = Requirement(line)
            name = bound.name.lower().replace("_", "-")
            if name in installed:
                assert bound.specifier.contains(installed[name], prereleases=True), f"{name} {installed[name]} breaks {bound}"
    assert total <= MAX_VENV_MIB, f"the device venv is {total} MiB (target <= {MAX_VENV_MIB})"


def test_demo_model_on_a_file_source_reaches_the_host_broker(pi: tuple[Chroot, str], broker: tuple[str, int]) -> None:
    ch, _ = pi
    prefix = f"edge-agent-qemu/{uuid.uuid4().hex[:8]}"
    config = f"""\
source: {{type: opencv, file: /home/pi/demo.avi, pace: fast}}
sinks:
  - {{type: mqtt, host: {broker[0]}, port: {broker[1]}, topic_prefix: {prefix}}}
model: {{threads: 2}}
"""
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", broker[0], "-p", str(broker[1]), "-t", f"{prefix}/detections", "-C", "3", "-W", "900"],
        text=True,
        stdout=subprocess.PIPE,
    )
    try:
        t0 = time.monotonic()
        run = ch.run(
            f"cat > /home/pi/config.yaml <<'EOF'\n{config}EOF\n"
            "cd /home/pi && /opt/edge-agent/venv/bin/edge-agent run -c /home/pi/config.yaml --frames 12 2>&1",
            timeout=900,
        )
        print(f"agent run under qemu: {time.monotonic() - t0:.0f} s\n{run.stdout[-2000:]}")
        out, _ = sub.communicate(timeout=60)
    finally:
        sub.kill()
    messages = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(messages) == 3, f"detections on the host broker: {out!r}"
    assert any("label" in json.dumps(m) for m in messages), messages[0]
