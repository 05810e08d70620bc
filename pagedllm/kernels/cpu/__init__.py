"""CPU kernels in C++, built on first use with torch's extension builder and cached on disk.

They are optional: with no compiler (or PAGEDLLM_CPU_KERNELS=0) the torch reference path runs
instead, with one warning. torch caches the build under ~/.cache/torch_extensions keyed by the
source, so only the first engine on a machine pays the ~20-40 s compile.
"""
from __future__ import annotations

import functools
import logging
import os
from types import ModuleType

import torch

logger = logging.getLogger(__name__)
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels.cpp")
BUILD_FLAGS = {"extra_cflags": ["-O3", "-march=native", "-fopenmp"], "extra_ldflags": ["-fopenmp"]}


@functools.cache
def load_cpu_kernels() -> ModuleType | None:
    """The compiled module, or None when the kernels are disabled or cannot be built here."""
    if os.environ.get("PAGEDLLM_CPU_KERNELS", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        return load(name="pagedllm_cpu_kernels", sources=[SOURCE], verbose=False, **BUILD_FLAGS)
    except Exception as e:  # no compiler, no ninja, unsupported platform: fall back, loudly
        logger.warning("CPU kernels unavailable (%s); using the torch attention path.", e)
        return None


def cpu_kernels_for(x: torch.Tensor) -> ModuleType | None:
    """The kernels if they apply to `x`: a 2-D float32/bfloat16 CPU tensor and a built module."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or x.dim() != 2:
        return None
    return load_cpu_kernels()
