"""Venvs holding the built wheel, outside the checkout (the device install, the converter install), and running them."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.install.wheel_venv import REPO, ensure_installed

CACHE = Path(os.environ.get("EDGE_AGENT_CONVERT_CACHE", Path.home() / ".cache" / "edge-agent"))
SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
#: the scripts of the converter toolchains (the `convert` extra); the rest are the device's
CONVERTER_SCRIPTS = {name for name, target in SCRIPTS.items() if target.startswith("converters.")}
OFFLINE = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "CUDA_VISIBLE_DEVICES": "",
}


def user_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH into the checkout, no virtualenv of ours, offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **OFFLINE}


def run_installed(venv: Path, script: str, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``venv/bin/<script>`` from ``cwd`` (a temp folder, never the checkout) as a user would."""
    return subprocess.run(
        [str(venv / "bin" / script), *args], cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def device_venv() -> Path:
    """The plain `pip install edge_agent-*.whl` (no extras): dependencies from the wheel's metadata, built once."""
    venv = CACHE / "venv-install-device"
    try:
        ensure_installed(venv, fresh=True)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"installing the wheel into a fresh venv failed: {exc}")
    return venv


@pytest.fixture(scope="session")
def convert_venv() -> Path:
    """venv-convert (scripts/test.sh: `pip install torch==2.13.0 'edge_agent-*.whl[convert]'`), wheel refreshed."""
    venv = Path(os.environ.get("EDGE_AGENT_CONVERT_PYTHON", CACHE / "venv-convert" / "bin" / "python")).parents[1]
    if not (venv / "bin" / "python").is_file():
        msg = f"the converter venv {venv} is missing; scripts/test.sh builds it"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    ensure_installed(venv, deps=False)
    return venv
