#!/usr/bin/env bash
# Set up a virtual environment with the device install and run the demo:
# the bundled demo detector on the synthetic camera, with a live console view.
# Extra arguments go to `edge-agent run` (e.g. --duration 30, -c config.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${EDGE_AGENT_VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e .

exec "$VENV/bin/edge-agent" run "$@"
