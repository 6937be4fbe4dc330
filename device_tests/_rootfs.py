"""Throwaway Debian bookworm systems for the device tests: a chroot (arm64 under qemu-user) or a
booted container (`systemd-nspawn --boot`), both on an overlay over the cached rootfs.

The cached rootfs (device_tests/host_setup.sh) is never written: each test gets an overlay whose
upper layer is deleted afterwards. pip's and apt's download caches are bind-mounted from the
cache directory so a second run downloads nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST_SETUP = HERE / "host_setup.sh"
CACHE = Path(os.environ.get("EDGE_AGENT_TEST_CACHE", "/var/cache/edge-agent-tests"))


def host_setup(*args: str, timeout: float = 1800) -> str:
    out = subprocess.run([str(HOST_SETUP), *args], check=True, text=True, stdout=subprocess.PIPE, timeout=timeout)
    return out.stdout.strip()


def checkout_files() -> list[str]:
    """The checkout as a user would clone it (tracked and new, not ignored, files)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, text=True, check=True, stdout=subprocess.PIPE
    )
    return [f for f in out.stdout.splitlines() if (REPO / f).is_file()]


class Overlay:
    """A writable overlay over a cached rootfs, with the download caches bound in."""

    def __init__(self, arch: str) -> None:
        self.arch = arch
        self.lower = Path(host_setup("rootfs", arch))
        self.tmp = Path(tempfile.mkdtemp(prefix=f"edge-agent-{arch}-", dir="/var/tmp"))
        self.root = self.tmp / "root"
        for d in ("upper", "work", "root"):
            (self.tmp / d).mkdir()
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={self.lower},upperdir={self.tmp}/upper,workdir={self.tmp}/work",
                str(self.root),
            ],
            check=True,
        )
        self.caches = {
            CACHE / f"pip-{arch}": "/root/.cache/pip",
            CACHE / f"apt-{arch}": "/var/cache/apt/archives",
        }
        for host in self.caches:
            (host / "partial").mkdir(parents=True, exist_ok=True)
        shutil.copy("/etc/resolv.conf", self.root / "etc/resolv.conf")
        # the host's CA bundle: where the host reaches package indexes through a TLS proxy, so must the guest
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", self.root / "etc/ssl/certs/ca-certificates.crt")
        # apt keeps downloaded .debs (the cache is a bind mount shared across runs)
        (self.root / "etc/apt/apt.conf.d/99keep-debs").write_text('Binary::apt::APT::Keep-Downloaded-Packages "true";\n')

    def copy_checkout(self, dest: str = "/root/edge-agent") -> str:
        target = self.root / dest.lstrip("/")
        for rel in checkout_files():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, target / rel)
        return dest

    def close(self) -> None:
        if subprocess.run(["umount", "-R", str(self.root)], check=False).returncode != 0:
            subprocess.run(["umount", "-R", "-l", str(self.root)], check=False)  # busy (a straggler process): detach
        if os.path.ismount(self.root):
            return  # never rm -rf through a mount (the binds include /dev and /proc)
        shutil.rmtree(self.tmp, ignore_errors=True)


_PI4_CORE = """processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

"""
# /proc/cpuinfo of a Raspberry Pi 4 Model B (4x Cortex-A72) under Raspberry Pi OS bookworm's 64-bit kernel
PI4_CPUINFO = "".join(_PI4_CORE.format(n=n) for n in range(4)) + (
    "Hardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 10000000deadbeef\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"
)


class Chroot:
    """Run commands in the overlay with chroot (no init): the emulated-Pi test."""

    def __init__(self, overlay: Overlay) -> None:
        self.ov = overlay
        root = overlay.root
        binds = [("/proc", "proc"), ("/sys", "sys"), ("/dev", "dev"), ("/dev/pts", "dev/pts")]
        binds += [(str(h), c.lstrip("/")) for h, c in overlay.caches.items()]
        for src, rel in binds:
            (root / rel).mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", src, str(root / rel)], check=True)
        if overlay.arch == "arm64" and os.uname().machine != "aarch64":
            # qemu-user (7.2) hands guests the host's x86 /proc/cpuinfo. LiteRT's and onnxruntime's CPU
            # detection parse it as an arm64 one and crash ("qemu: uncaught target signal 11") while the
            # interpreter allocates tensors / the extension loads. A Pi 4's cpuinfo over the guest's view
            # (private first, so the host's /proc never sees it) is what the kernel gives a real Pi.
            cpuinfo = overlay.tmp / "cpuinfo"
            cpuinfo.write_text(PI4_CPUINFO)
            subprocess.run(["mount", "--make-private", str(root / "proc")], check=True)
            subprocess.run(["mount", "--bind", str(cpuinfo), str(root / "proc/cpuinfo")], check=True)

    def run(self, script: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
        }
        if self.ov.arch == "arm64" and os.uname().machine != "aarch64":
            # qemu-user emulates its "max" CPU by default (SVE, i8mm, ...), which no Pi has: XNNPACK then picks
            # int8 kernels that produce no detections under qemu 7.2. A Pi 4's Cortex-A72 matches the cpuinfo above
            # and gives the host's results bit for bit.
            env["QEMU_CPU"] = "cortex-a72"
        proc = subprocess.run(
            ["chroot", str(self.ov.root), "/bin/bash", "-euo", "pipefail", "-c", script],
            env=env,
            cwd="/",
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in chroot ({self.ov.arch}) exit {proc.returncode}:\n{script}\n--- output ---\n{proc.stdout[-6000:]}"
            )
        return proc


class BootedMachine:
    """`systemd-nspawn --boot` on the overlay; commands enter its namespaces with nsenter.

    The host here has no systemd (no machined, no system bus), hence --register=no --keep-unit.
    The container shares the host's network, so it reaches the host's MQTT broker on 127.0.0.1.
    """

    def __init__(self, overlay: Overlay, name: str = "edge-agent-test") -> None:
        self.ov = overlay
        self.console = overlay.tmp / "console.log"
        cmd = ["systemd-nspawn", "-q", "-D", str(overlay.root), "--boot", "--register=no", "--keep-unit"]
        cmd += [f"--machine={name}", "--console=read-only"]
        cmd += [f"--bind={h}:{c}" for h, c in overlay.caches.items()]
        self._log = self.console.open("w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.leader = self._wait_for_leader()
        self._wait_booted()

    def _wait_for_leader(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}:\n{self.console.read_text()[-4000:]}")
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], text=True, stdout=subprocess.PIPE).stdout.split()
            for pid in kids:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            time.sleep(0.2)
        raise AssertionError("the container's init never started")

    def _wait_booted(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run("systemctl is-system-running 2>/dev/null || true", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(1)
        raise AssertionError(f"container did not finish booting (state {state!r}):\n{self.console.read_text()[-4000:]}")

    def run(self, script: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
        }
        cmd = [
            "nsenter",
            "-t",
            str(self.leader),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "--root",
            "--",
            "/usr/bin/env",
            "-C",
            "/",
            "/bin/bash",
            "-euo",
            "pipefail",
            "-c",
            script,
        ]
        proc = subprocess.run(cmd, env=env, cwd="/", text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"in container exit {proc.returncode}:\n{script}\n--- output ---\n{proc.stdout[-6000:]}")
        return proc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # nspawn asks the container's systemd to power off
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
