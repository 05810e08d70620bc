"""A value set for the duration of a `with` block and read by code called inside it: how the
step's forward context reaches the attention layers, and the layer kernels reach the layers a
model builds. Scopes nest; leaving one restores the value before it. One process-wide slot per
Scoped (the engine runs one step, or builds one model, at a time)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Scoped(Generic[T]):
    def __init__(self) -> None:
        self.value: T | None = None

    @contextlib.contextmanager
    def use(self, value: T) -> Iterator[T]:
        previous, self.value = self.value, value
        try:
            yield value
        finally:
            self.value = previous
