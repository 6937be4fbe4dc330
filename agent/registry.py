"""Plugin registries: one file per plugin, discovered by import, keyed by ``type_key``.

As in Frigate's detector plugins, adding a source, backend, decoder or sink touches one new
file. A plugin whose optional dependency is missing still registers; it fails only when used.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps ``type_key`` -> plugin class for every subclass of ``base`` found in ``package``."""

    # ``base`` is an abstract class, which ``type[T]`` would reject: annotate the registry instead
    def __init__(self, package: ModuleType, base: type, skip: frozenset[str] = frozenset({"base"})) -> None:
        self._package = package
        self._base = base
        self._skip = skip
        self._plugins: dict[str, type[T]] | None = None

    def _discover(self) -> dict[str, type[T]]:
        if self._plugins is None:
            for info in pkgutil.iter_modules(self._package.__path__):
                if info.name.startswith("_") or info.name in self._skip:
                    continue
                importlib.import_module(f"{self._package.__name__}.{info.name}")
            found: dict[str, type[T]] = {}
            stack: list[type] = list(self._base.__subclasses__())
            while stack:
                cls = stack.pop()
                stack.extend(cls.__subclasses__())
                key = cls.__dict__.get("type_key")
                if isinstance(key, str):
                    found[key] = cls
            self._plugins = dict(sorted(found.items()))
        return self._plugins

    def get(self, key: str) -> type[T]:
        plugins = self._discover()
        try:
            return plugins[key]
        except KeyError:
            raise KeyError(f"unknown {self._base.__name__} type {key!r}; known: {', '.join(plugins)}") from None

    def keys(self) -> list[str]:
        return list(self._discover())

    def items(self) -> list[tuple[str, type[T]]]:
        return list(self._discover().items())
