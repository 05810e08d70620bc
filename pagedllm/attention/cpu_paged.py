"""The CPU production backend: decode steps through the C++ paged kernel, the rest in torch.

The kernel reads each request's K/V straight from its cache blocks (no gathered copy), which is
4-5x faster than the torch path's gather + SDPA at batch 64. Steps with prefill tokens, dtypes
the kernel lacks, or a machine that cannot build it use the torch reference path unchanged.
"""
from __future__ import annotations

import torch

from pagedllm.attention.base import AttentionMetadata
from pagedllm.attention.torch_ref import TorchAttentionBackend
from pagedllm.kernels.cpu import load_cpu_kernels

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


class CpuPagedAttentionBackend(TorchAttentionBackend):
    name = "cpu_paged"

    def __init__(self) -> None:
        self.kernels = load_cpu_kernels()

    def decode_only(self, query: torch.Tensor, kv_cache: torch.Tensor, metadata: AttentionMetadata,
                    scale: float, out: torch.Tensor) -> None:
        if self.kernels is None or query.dtype not in _KERNEL_DTYPES:
            super().decode_only(query, kv_cache, metadata, scale, out)
            return
        n = query.shape[0]
        self.kernels.paged_decode_attention(out, query.contiguous(), kv_cache[0], kv_cache[1],
                                            metadata.block_table[:n], metadata.seq_lens[:n], scale)
