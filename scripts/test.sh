#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# This is the README's test command and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

cat >&2 <<'SAY'
scripts/test.sh sets up, then runs the whole suite (pytest; arguments are passed on):
  - apt (as root, when missing): mosquitto (the MQTT tests start their own brokers)
  - .venv (or $EDGE_AGENT_VENV): the agent, editable, with the dev extra - the light device install
  - ~/.cache/edge-agent/venv-convert: the converter toolchains (torch CPU, TensorFlow, onnx2tf);
    EDGE_AGENT_SKIP_CONVERTERS=1 skips it
  - ~/.cache/edge-agent/venv-<name>: reference toolchains from scripts/envs/ (Ultralytics, ...), test-only;
    EDGE_AGENT_SKIP_REFERENCE=1 skips them
  - /var/cache/edge-agent-tests: debootstrapped bookworm rootfs for device_tests/ (root only);
    pass -m "not slow" or --ignore=device_tests to leave the device tests out
Each is built once and rebuilt only when what it is built from changes.
SAY

# System packages the tests start for real (a Mosquitto broker of their own, ...).
need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto mosquitto-clients)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)  # promtool check metrics (tests/mqtt/test_prometheus_metrics.py)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "missing system packages: ${need_apt[*]} (install them with apt-get as root)" >&2
  fi
fi

VENV=${EDGE_AGENT_VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[dev]'

# Converter toolchains (tests/converters run conversions in this interpreter, in subprocesses): the
# `convert` extra (torch, litert-torch, TensorFlow, onnx2tf) in one venv, kept out of the test venv so
# the agent's tests run against the light device install. Cached across runs; set
# EDGE_AGENT_SKIP_CONVERTERS=1 to skip preparing it (those tests then skip).
CONVERT_CACHE=${EDGE_AGENT_CONVERT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent}
if [ -z "${EDGE_AGENT_SKIP_CONVERTERS:-}" ]; then
  env_dir="$CONVERT_CACHE/venv-convert"
  # A wheel install, as users get it (`pip install 'edge-agent[convert]'`), not the checkout: the heavy
  # toolchains install once from the wheel's own metadata, keyed by pyproject's dependency lists; a code
  # change only reinstalls the wheel (--no-deps). torch pinned: an unpinned resolve fetches a CUDA build.
  mkdir -p "$CONVERT_CACHE"
  "$PYTHON" tests/install/wheel_venv.py "$env_dir" --extra convert --pin torch==2.13.0
  export EDGE_AGENT_CONVERT_PYTHON="$env_dir/bin/python"
fi

# Reference toolchains (Ultralytics, MediaPipe, ...): test-only, one cached venv each, described by
# scripts/envs/<name>.txt or <name>.sh and rebuilt only when those files change. The conformance suite
# compares the agent with them; EDGE_AGENT_SKIP_REFERENCE=1 skips preparing them (those tests then skip,
# except under CI=true where a missing venv fails).
ensure_env() {
  local name=$1 dir="$CONVERT_CACHE/venv-$1" key
  key=$(cat scripts/envs/"$name".* | sha256sum | cut -c1-16)
  if [ "$(cat "$dir/.edge-agent-key" 2>/dev/null)" = "$key" ]; then return 0; fi
  echo "test.sh: building reference venv $name in $dir (once; rebuilt when scripts/envs/$name.* change)" >&2
  rm -rf "$dir" && mkdir -p "$CONVERT_CACHE" && "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip
  if [ -f "scripts/envs/$name.sh" ]; then
    bash "scripts/envs/$name.sh" "$dir/bin/python"
  else
    "$dir/bin/python" -m pip install --quiet -r "scripts/envs/$name.txt"
  fi
  echo "$key" > "$dir/.edge-agent-key"
}
if [ -z "${EDGE_AGENT_SKIP_REFERENCE:-}" ]; then
  for spec in scripts/envs/*.txt scripts/envs/*.sh; do
    [ -e "$spec" ] || continue
    name=$(basename "$spec"); name=${name%.*}
    ensure_env "$name"
  done
fi

exec "$VENV/bin/python" -m pytest "$@"
