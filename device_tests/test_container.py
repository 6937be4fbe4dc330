"""The container image, built offline the way CI can: a debootstrapped bookworm imported with
`podman import`, `podman build --isolation=chroot`. `podman run` does not work on these
machines (cgroups), so the image's exported filesystem runs the demo under chroot instead."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from device_tests._rootfs import REPO, host_setup

pytestmark = pytest.mark.slow

BASE = "localhost/bookworm-base"
IMAGE = f"localhost/edge-agent:test-{uuid.uuid4().hex[:8]}"  # per run: concurrent runs on one host never share it
# the test passes the image's PATH (/usr/bin:/bin) to the child; chroot itself lives in /usr/sbin
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def podman(*args: str, timeout: float = 1800) -> str:
    proc = subprocess.run(["podman", *args], text=True, capture_output=True, timeout=timeout)
    assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture
def clean_images() -> Iterator[None]:
    """Each build leaves the previous image and its build stage untagged (~800 MB apiece): drop them after."""
    try:
        yield
    finally:
        subprocess.run(["podman", "rmi", "-f", IMAGE], capture_output=True)
        subprocess.run(["podman", "image", "prune", "-f"], capture_output=True)


def test_image_builds_offline_and_runs_the_demo(host_tools: None, clean_images: None, tmp_path: Path) -> None:
    rootfs = Path(host_setup("rootfs", "amd64"))
    if subprocess.run(["podman", "image", "exists", BASE]).returncode != 0:
        # the cached rootfs plus the host's CA bundle: the build stage's pip reaches PyPI the way the host does
        # (through a TLS proxy here), as the device tests' overlays do (device_tests/_rootfs.py)
        ca = tmp_path / "ca"
        (ca / "etc/ssl/certs").mkdir(parents=True)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", ca / "etc/ssl/certs/ca-certificates.crt")
        tar = tmp_path / "base.tar"
        bundle = "./etc/ssl/certs/ca-certificates.crt"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), f"--exclude={bundle}", "."], check=True)
        subprocess.run(["tar", "-C", str(ca), "-rf", str(tar), bundle], check=True)
        podman("import", "--change", f"ENV=PIP_CERT={bundle[1:]}", str(tar), BASE)
        tar.unlink()
    t0 = time.monotonic()
    podman("build", "--isolation=chroot", "--network=host", "-q", "-t", IMAGE, "-f", "Containerfile", str(REPO))
    print(f"podman build: {time.monotonic() - t0:.0f} s")
    user = podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).strip()
    assert user == "10001:10001"
    cid = podman("create", IMAGE).strip()
    try:
        podman("export", "-o", str(tmp_path / "image.tar"), cid)
    finally:
        podman("rm", cid)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(tmp_path / "image.tar") as tf:
        tf.extractall(root, filter="fully_trusted")
    assert not (root / "usr/bin/pip").exists() and not (root / "usr/lib/python3/dist-packages/pip").exists()  # runtime stage
    for d in ("proc", "dev"):
        subprocess.run(["mount", "--bind", f"/{d}", str(root / d)], check=True)
    try:
        proc = subprocess.run(
            [CHROOT, "--userspec=10001:10001", str(root), "/opt/edge-agent/venv/bin/edge-agent", "run", "--frames", "5"],
            env={"PATH": "/usr/bin:/bin", "STATE_DIRECTORY": "/var/lib/edge-agent", "EDGE_AGENT_SINKS": '[{"type": "jsonl"}]'},
            cwd="/",
            text=True,
            capture_output=True,
            timeout=300,
        )
    finally:
        for d in ("dev", "proc"):
            subprocess.run(["umount", "-l", str(root / d)], check=False)
        if not any((root / d).is_mount() for d in ("dev", "proc")):
            shutil.rmtree(root, ignore_errors=True)
        (tmp_path / "image.tar").unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    frames = [line for line in proc.stdout.splitlines() if '"frame_id"' in line]
    assert len(frames) == 5, proc.stdout[-2000:]


def test_daemonset_manifest_parses() -> None:
    """No packaged offline Kubernetes schema validator in bookworm: structure checks only."""
    docs = list(yaml.safe_load_all((REPO / "systemd/k8s/edge-agent-daemonset.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    ds = kinds["DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert {"/etc/edge-agent", "/dev/video0", "/dev/dma_heap"} <= mounts
    assert "config.yaml" in kinds["ConfigMap"]["data"]
