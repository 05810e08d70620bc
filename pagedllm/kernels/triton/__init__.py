"""Triton kernels for the CUDA path: paged KV-cache writes, paged attention (mixed batches and a
split-K decode path), fused RMSNorm (+ residual), in-place rotary embedding, SiLU-and-mul, the
sampler's inverse-CDF stage and a GEMM for small steps.

Triton is optional: `triton_available()` says whether it imports. Kernel modules import triton at
their top, so import them only after checking; which layers run them is the platform's choice
(KernelConfig.triton, platforms/cuda.py), so CPU runs never import triton.

Under `TRITON_INTERPRET=1` the same kernels run on CPU tensors (slowly), which is how CI checks
them on machines without a GPU.
"""
from __future__ import annotations

import functools


@functools.cache
def triton_available() -> bool:
    """True when triton imports."""
    try:
        import triton
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True
