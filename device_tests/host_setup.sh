#!/usr/bin/env bash
# Host prerequisites for the emulated-Pi, systemd and container tests, and the cached rootfs.
#
#   device_tests/host_setup.sh packages        apt-get the tools when missing (root only)
#   device_tests/host_setup.sh binfmt          mount binfmt_misc, register qemu-aarch64 (F flag)
#   device_tests/host_setup.sh rootfs ARCH     print the cached bookworm rootfs for ARCH, building it once
#
# Rootfs live outside the repo in $EDGE_AGENT_TEST_CACHE (default /var/cache/edge-agent-tests)
# and are reused across runs: a build is ~2-4 min (amd64) or ~6-10 min (arm64, emulated).
# Tests never write into them; they run on a throwaway overlay (see device_tests/_rootfs.py).
set -euo pipefail

CACHE=${EDGE_AGENT_TEST_CACHE:-/var/cache/edge-agent-tests}
MIRROR=${EDGE_AGENT_TEST_MIRROR:-http://deb.debian.org/debian}
# What Raspberry Pi OS Lite has before the user runs anything: systemd as PID 1, python3, sudo, curl.
BASE_PACKAGES=systemd,systemd-sysv,dbus,python3,ca-certificates,sudo,iproute2,procps,curl

packages() {
  local need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v systemd-nspawn >/dev/null || need+=(systemd-container)
  command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null || need+=(binfmt-support)
  command -v podman >/dev/null || need+=(podman)
  command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { echo "missing ${need[*]}: run as root" >&2; return 1; }
  echo "host_setup: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
}

binfmt() {
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # qemu-user-static's own entry (flags OPF): F (fix binary) opens the interpreter now, so it
    # works inside chroots and containers that lack it; P keeps argv[0] for the -binfmt-P wrapper.
    local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    if [ -r "$conf" ]; then
      cat "$conf" > /proc/sys/fs/binfmt_misc/register
    else
      update-binfmts --enable qemu-aarch64
    fi
  fi
  grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64
}

rootfs() {
  local arch=$1 dir="$CACHE/bookworm-$1"
  if [ ! -f "$dir/.complete" ]; then
    [ "$arch" = arm64 ] && binfmt
    mkdir -p "$CACHE"
    rm -rf "$dir.tmp"
    echo "host_setup: debootstrap bookworm $arch into $dir (once; cached)" >&2
    local t0=$SECONDS
    debootstrap --arch="$arch" --variant=minbase --include="$BASE_PACKAGES" bookworm "$dir.tmp" "$MIRROR" >&2
    echo "edge-pi" > "$dir.tmp/etc/hostname"
    # a root without a password, so `systemd-nspawn --boot` reaches multi-user without prompts
    chroot "$dir.tmp" passwd -d root >/dev/null
    chroot "$dir.tmp" apt-get clean
    touch "$dir.tmp/.complete"
    mv "$dir.tmp" "$dir"
    echo "host_setup: rootfs $arch built in $((SECONDS - t0)) s" >&2
  fi
  echo "$dir"
}

case "${1:-}" in
  packages) packages ;;
  binfmt) binfmt ;;
  rootfs) rootfs "${2:?arch: amd64 or arm64}" ;;
  *) echo "usage: $0 packages|binfmt|rootfs ARCH" >&2; exit 2 ;;
esac
