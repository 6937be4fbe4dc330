"""Fixtures of the installed-wheel tests (helpers and the why live in installed.py)."""

from installed import convert_venv, device_venv

__all__ = ["convert_venv", "device_venv"]
