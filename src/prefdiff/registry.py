"""Named registries: backbones, objectives, data formats and scorers are looked up by name.

A registry maps a name to an entry (a class or a small record). Entries register themselves
where they are defined, with ``@REGISTRY.register("name")``; a registry that knows the package
its entries live in imports every module of that package the first time it is asked, so adding
an entry is adding a file. An unknown name is an error that lists the known ones, never a
fall-through to some default.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from prefdiff.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry. ``kind`` names what is registered, for error messages ("objective")."""

    def __init__(self, kind: str, package: str | None = None, error: type[Exception] = ConfigError) -> None:
        self.kind = kind
        self.package = package
        self.error = error
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class (or object) under ``name``."""

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def _discover(self) -> None:
        """Import every module of the package once, so that each registers its entries."""
        if self._discovered or self.package is None:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        self._discover()
        return list(self._entries)

    def get(self, name: str, key: str | None = None) -> T:
        """The entry for ``name``; an unknown name raises ``self.error`` listing the known ones
        (and naming the config key ``key`` when given)."""
        self._discover()
        if name not in self._entries:
            where = f"config key '{key}': " if key else ""
            known = ", ".join(self._entries) or "none"
            raise self.error(f"{where}unknown {self.kind} {name!r} (known: {known})")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def items(self) -> Iterator[tuple[str, T]]:
        self._discover()
        return iter(list(self._entries.items()))
