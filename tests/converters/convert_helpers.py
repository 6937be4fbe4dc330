"""Helpers for the converter tests: conversions run in the toolchain virtualenvs (scripts/test.sh prepares them) as subprocesses.

The toolchains (the `convert` extra: torch, litert-torch, TensorFlow, onnx2tf) live in one venv of their own,
holding the built wheel as users install it (tests/install/wheel_venv.py refreshes it when the code changes): the
converters run as its console scripts from a temp folder, without the checkout on the path. The test process
itself (the dev venv, no torch/TF) checks the outputs with the agent, as a device would. Network access is cut
for every conversion (proxies pointed at a closed port): conversions must be offline.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.install.wheel_venv import CODE_STAMP, DEPS_STAMP, ensure_installed, venv_lock

REPO = Path(__file__).resolve().parents[2]
SELFTEST = REPO / "models" / "demo" / "selftest"
DEMO_ONNX = REPO / "models" / "demo" / "onnx-fp32" / "model.onnx"
FACTORY = "tests.converters.demo_factory:build"
CACHE = Path(os.environ.get("EDGE_AGENT_CONVERT_CACHE", Path.home() / ".cache" / "edge-agent"))
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": "", "HF_HUB_OFFLINE": "1"}


def _python(var: str, default: Path, extra: str) -> str:
    """The interpreter for one path: ``var`` (a per-path override), else EDGE_AGENT_CONVERT_PYTHON, else the cache."""
    path = os.environ.get(var) or os.environ.get("EDGE_AGENT_CONVERT_PYTHON") or str(default)
    if not Path(path).is_file():
        pytest.skip(f"the {extra} toolchain venv is missing ({path}); scripts/test.sh creates it "
                    f"(tests/install/wheel_venv.py VENV --extra {extra}), or set {var}")
    _refresh_wheel(Path(path).parents[1])
    return path


@functools.cache
def _refresh_wheel(venv: Path) -> None:
    """Reinstall the wheel in a venv tests/install/wheel_venv.py built, when the code changed since (once a session)."""
    if (venv / DEPS_STAMP).exists() or (venv / CODE_STAMP).exists():
        ensure_installed(venv, deps=False)


@functools.cache
def _test_imports() -> Path:
    """A folder holding only ``tests`` (a link): factories like tests.converters.demo_factory import, the
    checkout's agent/ and converters/ do not (the installed wheel's do)."""
    root = Path(tempfile.mkdtemp(prefix="edge-agent-test-imports-"))
    (root / "tests").symlink_to(REPO / "tests", target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def torch_python() -> str:
    return _python("EDGE_AGENT_CONVERT_TORCH_PYTHON", CACHE / "venv-convert" / "bin" / "python", "convert")


@pytest.fixture(scope="session")
def tf_python() -> str:
    return _python("EDGE_AGENT_CONVERT_TF_PYTHON", CACHE / "venv-convert" / "bin" / "python", "convert")


def run(python: str, *args: str, tool: str = "convert", timeout: float = 600,
        pythonpath: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run a converter's installed console script beside ``python``, offline, from a temp folder.

    ``tool == 'code'`` runs ``-c`` code from the repo root instead (test scaffolding that builds source models).
    ``pythonpath``: extra import roots (a pickled module needs its class importable, as for any torch.load).
    """
    env = {**os.environ, **OFFLINE, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    if tool == "code":
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (REPO, *pythonpath))
        return subprocess.run([python, "-c", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    script = Path(python).parent / {"convert": "convert-to-tflite", "quantize": "quantize-onnx"}[tool]
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (_test_imports(), *pythonpath))
    venv = Path(python).parents[1]
    ours = (venv / DEPS_STAMP).exists() or (venv / CODE_STAMP).exists()
    lock = venv_lock(venv, shared=True) if ours else contextlib.nullcontext()  # no reinstall under a running tool
    with tempfile.TemporaryDirectory(prefix="edge-agent-convert-cwd-") as cwd, lock:
        return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="session")
def calibration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 rendered scenes (a seed apart from training and the self-test set), saved as the agent would see them."""
    import cv2

    from agent.sources.scenes import random_scene

    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(777)
    for i in range(48):
        image, _ = random_scene(rng, 640, 480)
        cv2.imwrite(str(folder / f"calib_{i:02d}.png"), image)
    return folder


class Conversions:
    """Session cache: each (name, args) conversion runs once and is shared by the tests that need it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._done: dict[str, Path] = {}

    def get(self, name: str, python: str, args: list[str], tool: str = "convert") -> Path:
        if name not in self._done:
            out = self.root / name
            ok(run(python, *args, "-o", str(out), tool=tool))
            self._done[name] = out
        return self._done[name]


@pytest.fixture(scope="session")
def conversions(tmp_path_factory: pytest.TempPathFactory) -> Conversions:
    return Conversions(tmp_path_factory.mktemp("converted"))


@pytest.fixture(scope="session")
def dynamic_onnx(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/converters/dynamic_yolo.py's dynamic-axis detector: "meta" with Ultralytics' metadata_props, "bare" without."""
    folder = tmp_path_factory.mktemp("dynamic")
    code = "import sys; sys.path.insert(0, 'tests/converters'); import dynamic_yolo as d; d.build(sys.argv[1], sys.argv[2] > '0')"
    paths = {"meta": folder / "yolo_dynamic.onnx", "bare": folder / "yolo_dynamic_bare.onnx"}
    for key, path in paths.items():
        ok(run(torch_python, code, str(path), "1" if key == "meta" else "0", tool="code"))
    return paths


def report(out: Path) -> dict[str, object]:
    return json.loads((out / "report.json").read_text())


def demo_args(quantize: str, calibration: Path, *extra: str) -> list[str]:
    args = [FACTORY, "--labels", str(SELFTEST / "labels.json"), "--quantize", quantize,
            "--validate", str(SELFTEST), "--score-threshold", "0.45"]
    if quantize == "int8":
        args += ["--calibration", str(calibration)]
    return args + list(extra)


Runner = Callable[..., subprocess.CompletedProcess[str]]
