"""Build the edge-agent wheel and keep a venv's installed copy current (stdlib only: scripts/test.sh runs it too).

A venv made here is a wheel install, as users get it: its heavy dependencies are installed once from the
wheel's own metadata (``pip install 'edge_agent-*.whl[extra]'``, keyed by the dependency lists in
pyproject.toml), and only the wheel is reinstalled (``--no-deps --force-reinstall``) when the code changes.
Both stamps live in the venv; a lock file keeps concurrent test sessions from reinstalling under each other.

    python tests/install/wheel_venv.py VENV_DIR [--extra convert] [--pin torch==2.13.0]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: what goes into the wheel (pyproject's packages and package-dir) plus the files the build reads
WHEEL_INPUTS = ("pyproject.toml", "README.md", "agent", "converters", "models/demo", "systemd")
MIN_SETUPTOOLS = 77  # PEP 639 license expressions (license = "Apache-2.0")
CODE_STAMP, DEPS_STAMP, LOCK = ".edge-agent-wheel", ".edge-agent-wheel-deps", ".edge-agent-wheel.lock"
WHEEL_DIR = ".edge-agent-dist"


def _files(repo: Path) -> list[Path]:
    out: list[Path] = []
    for name in WHEEL_INPUTS:
        top = repo / name
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        out += [p for p in paths if "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return out


def code_key(repo: Path = REPO) -> str:
    """Hash of every file the wheel is built from (paths and contents)."""
    digest = hashlib.sha256()
    for path in _files(repo):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def deps_key(extras: list[str], pins: list[str], repo: Path = REPO) -> str:
    """Hash of the dependency lists the heavy install resolves (a code-only change does not alter it)."""
    project = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # extras may name each other (edge-agent[convert-tf]): with any extra wanted, every list counts
    optional = project.get("optional-dependencies", {}) if extras else {}
    data = {"deps": project["dependencies"], "extras": optional, "want": extras, "pins": pins}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _builder(python: str) -> list[str]:
    """``pip wheel`` args: no build isolation when ``python`` has a new enough setuptools (no index needed)."""
    probe = "import importlib.metadata as m; print(m.version('setuptools'), m.version('wheel'))"
    proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    major = proc.stdout.split(".")[0] if proc.returncode == 0 else "0"
    local = major.isdigit() and int(major) >= MIN_SETUPTOOLS
    return [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation" if local else "--use-pep517"]


def build_wheel(dest: Path, python: str = sys.executable, repo: Path = REPO) -> Path:
    """Build the wheel from a copy of the wheel's inputs (no build/ or egg-info left in the checkout)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-agent-src-") as tmp:
        src = Path(tmp) / "src"
        for path in _files(repo):
            target = src / path.relative_to(repo)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        proc = subprocess.run([*_builder(python), "-w", str(dest), str(src)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"building the wheel failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    wheels = sorted(dest.glob("edge_agent-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"pip wheel wrote no edge_agent-*.whl into {dest}")
    return wheels[-1]


@contextlib.contextmanager
def venv_lock(venv: Path, shared: bool = False) -> Iterator[None]:
    """Exclusive while (re)installing, shared while running the venv's tools."""
    venv.mkdir(parents=True, exist_ok=True)
    with open(venv / LOCK, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def ensure_installed(
    venv: Path, extras: Sequence[str] = (), pins: Sequence[str] = (), deps: bool = True, fresh: bool = False
) -> bool:
    """Make ``venv`` hold the current wheel (creating the venv and its dependencies when ``deps``).

    Returns True when something was (re)installed. ``deps=False`` only refreshes the wheel of an existing venv;
    ``fresh=True`` recreates the venv from nothing when the dependency lists changed (so a dependency that left
    the lists is gone too, as in a user's new install).
    """
    python = venv / "bin" / "python"
    with venv_lock(venv):
        want_code, want_deps = code_key(), deps_key(list(extras), list(pins))
        deps_ok = not deps or _read(venv / DEPS_STAMP) == want_deps
        if fresh and not deps_ok:
            for child in venv.iterdir():  # everything but the lock file this process holds
                if child.name != LOCK:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        if not python.exists():
            if not deps:
                raise FileNotFoundError(f"{venv} has no bin/python")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        code_ok = _read(venv / CODE_STAMP) == want_code
        if code_ok and deps_ok:
            return False
        # a fixed folder per venv: `pip freeze` (which keys cached fixtures) then names the same file each time
        dist = venv / WHEEL_DIR
        shutil.rmtree(dist, ignore_errors=True)
        wheel = build_wheel(dist, _pick_builder(python))
        spec = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
        if not deps_ok:  # the wheel's own metadata drives the resolution, as for a user
            _pip(python, "--upgrade", "pip")
            _pip(python, *pins, spec)
            (venv / DEPS_STAMP).write_text(want_deps + "\n")
        _pip(python, "--no-deps", "--force-reinstall", str(wheel))
        (venv / CODE_STAMP).write_text(want_code + "\n")
        return True


def _pick_builder(python: Path) -> str:
    """A python that builds without fetching setuptools (the target venv, this one, venv-convert), else ``python``."""
    candidates = [python, Path(sys.executable), python.parents[2] / "venv-convert" / "bin" / "python"]
    for candidate in candidates:
        if candidate.exists() and _builder(str(candidate))[-1] == "--no-build-isolation":
            return str(candidate)
    return str(python)  # pip's isolated build (fetches setuptools>=77 from the index)


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--extra", action="append", default=[], help="extras to install with the wheel (repeatable)")
    parser.add_argument("--pin", action="append", default=[], help="requirement installed alongside (e.g. torch==2.13.0)")
    args = parser.parse_args(argv)
    changed = ensure_installed(args.venv, args.extra, args.pin)
    print(f"{args.venv}: {'installed' if changed else 'up to date'} (code {code_key()}, deps {deps_key(args.extra, args.pin)})")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    sys.exit(main())
