#!/usr/bin/env bash
# Install (or upgrade, or remove) edge-agent as a systemd service on Raspberry Pi OS bookworm
# 64-bit, or Debian bookworm arm64/amd64. Run it again to upgrade; it is idempotent.
#
#   sudo scripts/install.sh                       from this checkout
#   sudo ./install.sh --from edge_agent-0.1.0-py3-none-any.whl   (or an sdist .tar.gz, or a checkout dir)
#   sudo scripts/install.sh --with-onnx           also ONNX Runtime, for .onnx models (edge-agent[onnx], +57 MiB)
#   sudo scripts/install.sh --dry-run             print every step, change nothing
#   sudo scripts/install.sh --uninstall [--purge] remove the service and /opt/edge-agent (--purge: config and state too)
#
# What lands where: /opt/edge-agent/venv (the agent, a venv with --system-site-packages so apt's
# picamera2/libcamera are visible), /etc/edge-agent/config.yaml (from the template, never
# overwritten), /etc/systemd/system/edge-agent.service, /var/lib/edge-agent (state, made by systemd),
# system user/group edge-agent (member of video for the camera). pip installs with the tested upper
# bounds of pi-constraints.txt (scripts/ in a checkout, or beside this script) as /opt/edge-agent/constraints.txt.
set -euo pipefail

PREFIX=/opt/edge-agent
VENV=$PREFIX/venv
CONF_DIR=/etc/edge-agent
UNIT_PATH=/etc/systemd/system/edge-agent.service
SERVICE_USER=edge-agent
# apt's picamera2 is built against bookworm's numpy 1.24; opencv-python-headless >= 4.12 needs numpy 2.
PICAMERA2_PINS=("numpy<2" "opencv-python-headless<=4.11.0.86")

DRY_RUN=0 UNINSTALL=0 PURGE=0 START=1 FROM="" TRUSTED_ROOT="" EXTRAS=""
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    --no-start) START=0 ;;
    --with-onnx) EXTRAS="[onnx]" ;;
    --from) FROM=${2:?--from needs a wheel, sdist or directory}; shift ;;
    --trusted-root) TRUSTED_ROOT=${2:?--trusted-root needs a file}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf 'edge-agent install: %s\n' "$*"; }
# run: print the command; execute it unless --dry-run
run() {
  printf '  + %s\n' "$*"
  [ "$DRY_RUN" = 1 ] || "$@"
}
die() { printf 'edge-agent install: error: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=""
[ -f "$SCRIPT_DIR/../pyproject.toml" ] && [ -d "$SCRIPT_DIR/../agent" ] && CHECKOUT=$(cd "$SCRIPT_DIR/.." && pwd)
systemd_running() { [ -d /run/systemd/system ]; }

[ "$(id -u)" = 0 ] || [ "$DRY_RUN" = 1 ] || die "run as root (sudo $0 $*)"

# ---------------------------------------------------------------------------------- uninstall
if [ "$UNINSTALL" = 1 ]; then
  if [ -f "$UNIT_PATH" ]; then
    if systemd_running; then
      run systemctl disable --now edge-agent.service
    else
      run systemctl disable edge-agent.service
    fi
    run rm -f "$UNIT_PATH"
    systemd_running && run systemctl daemon-reload
    systemd_running && run systemctl reset-failed edge-agent.service 2>/dev/null || true
  fi
  [ -d "$PREFIX" ] && run rm -rf "$PREFIX"
  if [ "$PURGE" = 1 ]; then
    run rm -rf "$CONF_DIR" /var/lib/edge-agent /var/lib/private/edge-agent
    getent passwd "$SERVICE_USER" >/dev/null && run userdel "$SERVICE_USER"
    getent group "$SERVICE_USER" >/dev/null && run groupdel "$SERVICE_USER"
    say "removed the service, $PREFIX, $CONF_DIR, the state and the $SERVICE_USER user"
  else
    say "removed the service and $PREFIX; kept $CONF_DIR and /var/lib/edge-agent (--purge removes them)"
  fi
  exit 0
fi

# ---------------------------------------------------------------------------------- platform
. /etc/os-release
ARCH=$(dpkg --print-architecture)
say "platform: ${PRETTY_NAME:-unknown} ($ARCH)"
[ "${VERSION_CODENAME:-}" = bookworm ] || say "warning: made for bookworm, this is ${VERSION_CODENAME:-unknown}; continuing"
case "$ARCH" in arm64 | amd64) ;; *) say "warning: made for arm64/amd64, this is $ARCH; continuing" ;; esac

# What to install: --from, else this checkout, else a wheel/sdist lying beside the script.
if [ -z "$FROM" ]; then
  if [ -n "$CHECKOUT" ]; then
    FROM=$CHECKOUT
  else
    FROM=$(ls -1 "$SCRIPT_DIR"/edge_agent-*.whl "$SCRIPT_DIR"/edge_agent-*.tar.gz 2>/dev/null | sort -V | tail -n1 || true)
  fi
fi
[ -n "$FROM" ] && [ -e "$FROM" ] || die "nothing to install: pass --from WHEEL|SDIST|DIR (got '${FROM}')"
FROM=$(cd "$(dirname "$FROM")" && pwd)/$(basename "$FROM")
say "installing from $FROM"

# The unit and config template: from a checkout/sdist's systemd/ folder, beside the script,
# or (wheel installs) from the package once it is in the venv (agent/deploy).
find_deploy_file() {
  local name=$1 d
  for d in "$CHECKOUT/systemd" "$SCRIPT_DIR" "$SCRIPT_DIR/../systemd" "$VENV"/lib/python3*/site-packages/agent/deploy; do
    [ -f "$d/$name" ] && { echo "$d/$name"; return 0; }
  done
  return 1
}

# ---------------------------------------------------------------------------------- apt
APT_PACKAGES=(python3 python3-venv ca-certificates)
# picamera2 comes from apt only (the Raspberry Pi archive has it; plain Debian does not).
HAVE_PICAMERA2=0
if apt-cache show python3-picamera2 >/dev/null 2>&1; then
  APT_PACKAGES+=(python3-picamera2)
  HAVE_PICAMERA2=1
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt: installing ${missing[*]}"
  run apt-get update -qq
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "apt: ${APT_PACKAGES[*]} already installed"
fi

# ---------------------------------------------------------------------------------- user
if getent passwd "$SERVICE_USER" >/dev/null; then
  say "user $SERVICE_USER exists"
else
  run useradd --system --user-group --no-create-home --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin "$SERVICE_USER"
fi
getent group video >/dev/null || run groupadd --system video

# ---------------------------------------------------------------------------------- venv
if [ -x "$VENV/bin/python" ]; then
  say "venv $VENV exists: upgrading in place"
else
  run mkdir -p "$PREFIX"
  run python3 -m venv --system-site-packages "$VENV"
fi
PIP_ARGS=(--disable-pip-version-check --no-input --upgrade --upgrade-strategy only-if-needed)
CONSTRAINTS=$PREFIX/constraints.txt
TESTED=""
for c in "$CHECKOUT/scripts/pi-constraints.txt" "$SCRIPT_DIR/pi-constraints.txt"; do
  [ -f "$c" ] && { TESTED=$c; break; }
done
if [ -n "$TESTED" ]; then
  say "pip constraints: the tested upper bounds in $TESTED"
  run install -m 0644 "$TESTED" "$CONSTRAINTS"
else
  say "warning: pi-constraints.txt not found beside the script: only ${PICAMERA2_PINS[*]} are bounded"
  if [ "$DRY_RUN" = 1 ]; then
    printf '  + write %s: %s\n' "$CONSTRAINTS" "${PICAMERA2_PINS[*]}"
  else
    printf '%s\n' "${PICAMERA2_PINS[@]}" > "$CONSTRAINTS"
  fi
fi
PIP_ARGS+=(-c "$CONSTRAINTS")
if [ "$HAVE_PICAMERA2" = 1 ]; then
  # named as requirements too: an upgrade must also move a numpy 2 already in the venv back to 1.x
  say "picamera2 present: pinning ${PICAMERA2_PINS[*]} so apt's picamera2 stays importable"
  PIP_ARGS+=("${PICAMERA2_PINS[@]}")
fi
# A checkout or sdist is built into a wheel by pip; the same version installed again is replaced.
run "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" --force-reinstall --no-deps "$FROM"
run "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" "$FROM$EXTRAS"
# A Python 3.11 venv starts with setuptools (ensurepip; 3.12 venvs no longer carry it): nothing imports it at
# run time, and building a checkout or sdist uses pip's isolated build environment. ~10 MiB of the device venv.
if "$VENV/bin/python" -m pip show -q setuptools >/dev/null 2>&1; then
  run "$VENV/bin/python" -m pip uninstall -y -q --disable-pip-version-check setuptools
fi
if [ "$DRY_RUN" = 0 ]; then
  say "installed: $("$VENV/bin/edge-agent" --version 2>/dev/null || "$VENV/bin/python" -m pip show edge-agent | sed -n 's/^Version: /edge-agent /p')"
  [ "$HAVE_PICAMERA2" = 0 ] || "$VENV/bin/python" -c 'import picamera2' || die "picamera2 does not import in $VENV"
  say "venv size: $(du -sm "$VENV" | cut -f1) MiB (runtimes: LiteRT${EXTRAS:+ and ONNX Runtime})"
fi

# ---------------------------------------------------------------------------------- config
UNIT_SRC=$(find_deploy_file edge-agent.service) || { [ "$DRY_RUN" = 1 ] && UNIT_SRC="<package>/agent/deploy/edge-agent.service"; } || die "edge-agent.service not found"
TEMPLATE=$(find_deploy_file config.template.yaml) || { [ "$DRY_RUN" = 1 ] && TEMPLATE="<package>/agent/deploy/config.template.yaml"; } || die "config.template.yaml not found"
run install -d -m 0755 "$CONF_DIR"
run install -m 0644 "$TEMPLATE" "$CONF_DIR/config.yaml.example"
if [ -e "$CONF_DIR/config.yaml" ]; then
  say "kept existing $CONF_DIR/config.yaml (the current template is config.yaml.example)"
else
  # readable by the service only: it may hold broker credentials
  run install -m 0640 -o root -g "$SERVICE_USER" "$TEMPLATE" "$CONF_DIR/config.yaml"
fi
if [ -n "$TRUSTED_ROOT" ]; then
  # the model registry's trusted root (signed OTA model updates)
  run install -m 0644 "$TRUSTED_ROOT" "$CONF_DIR/trusted-root.json"
elif [ ! -e "$CONF_DIR/trusted-root.json" ]; then
  say "no registry trusted root given (--trusted-root FILE): signed model updates stay off"
fi

# ---------------------------------------------------------------------------------- unit
if [ "$DRY_RUN" = 1 ]; then
  printf '  + install %s -> %s (ExecStart under %s)\n' "$UNIT_SRC" "$UNIT_PATH" "$VENV"
else
  printf '  + install %s -> %s\n' "$UNIT_SRC" "$UNIT_PATH"
  sed "s#/opt/edge-agent/venv#$VENV#g" "$UNIT_SRC" > "$UNIT_PATH.tmp"
  chmod 0644 "$UNIT_PATH.tmp"
  mv "$UNIT_PATH.tmp" "$UNIT_PATH"
fi
run systemctl enable edge-agent.service
if systemd_running; then
  run systemctl daemon-reload
  if [ "$START" = 0 ]; then
    say "not started (--no-start): sudo systemctl start edge-agent"
  elif systemctl is-active --quiet edge-agent.service; then
    run systemctl restart edge-agent.service
  else
    run systemctl reset-failed edge-agent.service 2>/dev/null || true
    run systemctl start edge-agent.service
  fi
  [ "$DRY_RUN" = 1 ] || [ "$START" = 0 ] || systemctl --no-pager --lines=0 status edge-agent.service || true
else
  say "systemd is not running here (chroot/image build): enabled for the next boot, not started"
fi
say "done. Config: $CONF_DIR/config.yaml  Logs: journalctl -u edge-agent  Status: systemctl status edge-agent"
