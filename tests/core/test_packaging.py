"""The wheel ships every agent and converters subpackage, the demo model, and a module for every console script.

These read pyproject.toml; tests/install/ builds the wheel and runs the installed scripts for real.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: top-level packages whose every subpackage must ship (the repo's other folders are not Python packages)
SHIPPED_ROOTS = ("agent", "converters")


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = PYPROJECT["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(p.relative_to(ROOT).parts[:-1])
        for root in SHIPPED_ROOTS
        for p in (ROOT / root).rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert config["package-dir"]["agent.demo_models"] == "models/demo"


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_every_console_script_points_into_a_shipped_package(script: str) -> None:
    target = PYPROJECT["project"]["scripts"][script]
    module, _, func = target.partition(":")
    package = module.rsplit(".", 1)[0] if "." in module else module
    assert package in PYPROJECT["tool"]["setuptools"]["packages"], f"{script} = {target!r}: {package} is not in the wheel"
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{script} = {target!r}: no module {module}"
    assert f"def {func}(" in Path(spec.origin).read_text(encoding="utf-8"), f"{script}: {module} defines no {func}()"


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from agent import __version__
    from agent.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"edge-agent {__version__}"
