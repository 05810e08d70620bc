"""Whether a step's q, k and v are adjacent column ranges of one tensor (the merged qkv GEMM's
output), so one launch can treat them as that tensor's rows."""
from __future__ import annotations

import torch


def merged_qkv_rows(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor | None:
    """The [T, W] view over q | k | v ([T, heads, head_size] each) when they are one tensor's
    adjacent column ranges, W = (heads + 2 * kv_heads) * head_size; else None."""
    size, heads, head_size = query.shape
    width = (heads + 2 * key.shape[1]) * head_size
    es = query.element_size()
    merged = (query.stride() == (width, head_size, 1) and key.stride() == (width, head_size, 1)
              and value.stride() == (width, head_size, 1) and key.shape == value.shape
              and key.data_ptr() == query.data_ptr() + heads * head_size * es
              and value.data_ptr() == key.data_ptr() + key.shape[1] * head_size * es)
    return torch.as_strided(query, (size, width), (width, 1), query.storage_offset()) if merged else None
