"""Timing calls by wrapping methods in place, shared by the step profilers (profile_step.py and
gpu/check_cuda_path.py)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wrap_timed(obj: Any, attr: str, record: Callable[[float], None]) -> None:
    """Replace obj.attr by a wrapper that passes each call's wall seconds to `record`."""
    fn = getattr(obj, attr)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record(time.perf_counter() - start)

    setattr(obj, attr, timed)
