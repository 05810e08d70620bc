"""Triton kernels for the CUDA path: paged KV-cache writes, paged attention (mixed batches and a
split-K decode path), fused RMSNorm (+ residual), in-place rotary embedding and SiLU-and-mul.

Triton is optional: `triton_available()` says whether it imports, and the layers fall back to
their torch paths when it does not. Kernel modules import triton at their top, so import them
only after checking (the layers do it lazily, so CPU runs never import triton).

Under `TRITON_INTERPRET=1` the same kernels run on CPU tensors (slowly), which is how CI checks
them on machines without a GPU.
"""
from __future__ import annotations

import functools
import os

import torch


@functools.cache
def triton_available() -> bool:
    """True when triton imports (and PAGEDLLM_TRITON is not "0")."""
    if os.environ.get("PAGEDLLM_TRITON", "1") == "0":
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def triton_applies(x: torch.Tensor) -> bool:
    """Whether a layer should call a Triton kernel on `x`: a CUDA tensor with triton present.
    CPU tensors never do, even under the interpreter: the CPU paths stay as they are, and tests
    call the kernels directly."""
    return x.is_cuda and triton_available()
