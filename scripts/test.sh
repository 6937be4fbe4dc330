#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# This is the README's test command and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests start for real (a Mosquitto broker of their own, ...).
need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto mosquitto-clients)
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
  [ -x "$env_dir/bin/python" ] || { mkdir -p "$CONVERT_CACHE" && "$PYTHON" -m venv "$env_dir"; }
  "$env_dir/bin/python" -m pip install --quiet --upgrade pip
  # torch pinned first: an unpinned resolve would fetch the newest CUDA build
  "$env_dir/bin/python" -m pip install --quiet torch==2.13.0 -e ".[convert]"
  export EDGE_AGENT_CONVERT_PYTHON="$env_dir/bin/python"
fi

exec "$VENV/bin/python" -m pytest "$@"
