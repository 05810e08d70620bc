"""Values into the paged KV cache, from every kernel that writes it."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def to_cache(x, cache_ptr):
    """x in the cache's element type. An fp8 (e4m3) cache saturates at +-448: e4m3 has no
    infinity, and a value past its range would otherwise become NaN (vLLM's kv_cache_dtype="fp8"
    with unit scales does the same)."""
    dtype: tl.constexpr = cache_ptr.dtype.element_ty
    if dtype == tl.float8e4nv:
        return tl.minimum(tl.maximum(x.to(tl.float32), -448.0), 448.0).to(dtype)
    return x.to(dtype)
