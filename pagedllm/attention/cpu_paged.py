"""The CPU production backend: decode steps through the C++ paged kernel, the rest in torch.

The kernel reads each request's K/V straight from its cache blocks (no gathered copy), which is
4-5x faster than the torch path's gather + SDPA at batch 64. Steps with prefill tokens, dtypes
the kernel lacks, or a machine that cannot build it use the torch reference path unchanged.
"""
from __future__ import annotations

import torch

from pagedllm.attention.base import AttentionMetadata
from pagedllm.attention.torch_ref import TorchAttentionBackend, write_kv_cache
from pagedllm.kernels.cpu import load_cpu_kernels

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


class CpuPagedAttentionBackend(TorchAttentionBackend):
    name = "cpu_paged"

    def __init__(self) -> None:
        self.kernels = load_cpu_kernels()

    def forward(
        self,
        query: torch.Tensor,  # [num_tokens, num_heads, head_size]
        key: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        value: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_size]
        metadata: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        if self.kernels is None or not metadata.is_decode_only or query.dtype not in _KERNEL_DTYPES:
            return super().forward(query, key, value, kv_cache, metadata, scale)
        n = metadata.num_actual_tokens
        write_kv_cache(key[:n], value[:n], kv_cache, metadata.slot_mapping[:n])
        out = query.new_zeros(query.shape) if n < query.shape[0] else torch.empty_like(query)
        self.kernels.paged_decode_attention(
            out[:n], query[:n].contiguous(), kv_cache[0], kv_cache[1],
            metadata.block_table[:n], metadata.seq_lens[:n], scale)
        return out
