"""Implementations by name, imported on first use.

Each registry maps a name to a "module:attribute" target, so optional dependencies (Triton, a
CUDA build, a model family's extras) are imported only when that entry is asked for. The model,
attention-backend, platform and executor registries are all one of these.
"""
from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    def __init__(self, kind: str, targets: dict[str, str]) -> None:
        """`kind` names what is registered, for error messages ("attention backend")."""
        self.kind = kind
        self._targets = dict(targets)

    def register(self, name: str, target: str) -> None:
        """Add (or replace) an entry as "module:attribute"."""
        if target.count(":") != 1:
            raise ValueError(f"A {self.kind} target is 'module:attribute', got {target!r}.")
        self._targets[name] = target

    def unregister(self, name: str) -> None:
        """Remove an entry (no error if absent)."""
        self._targets.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def check(self, name: str) -> None:
        """ValueError naming the supported ones if `name` is not registered (imports nothing)."""
        if name not in self._targets:
            raise ValueError(f"Unknown {self.kind} {name!r}; supported: {', '.join(self.names())}.")

    def get(self, name: str) -> T:
        """The registered object, imported now; ValueError naming the supported ones if unknown."""
        self.check(name)
        module_name, attr = self._targets[name].split(":")
        obj: Any = getattr(importlib.import_module(module_name), attr)
        return obj
