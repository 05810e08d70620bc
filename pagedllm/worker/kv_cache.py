"""Sizing and allocating the paged KV cache: one tensor per layer, K and V stacked."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pagedllm.attention.base import AttentionBackend
from pagedllm.config import CacheConfig, ModelConfig

logger = logging.getLogger(__name__)

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# On the CPU there is no device memory to fill; like vLLM's CPU backend we default to a fixed space.
DEFAULT_CPU_KV_CACHE_BYTES = 4 << 30


@dataclass(frozen=True)
class KVCacheSpec:
    num_layers: int
    num_kv_heads: int
    head_size: int
    dtype: str
    block_size: int

    @property
    def bytes_per_block(self) -> int:
        # K and V, all layers
        return 2 * self.num_layers * self.block_size * self.num_kv_heads * self.head_size * _DTYPE_BYTES[self.dtype]

    @staticmethod
    def from_configs(model_config: ModelConfig, cache_config: CacheConfig) -> KVCacheSpec:
        hf = model_config.hf_config
        num_heads = hf.num_attention_heads
        head_size = getattr(hf, "head_dim", None) or hf.hidden_size // num_heads
        return KVCacheSpec(
            num_layers=hf.num_hidden_layers,
            num_kv_heads=getattr(hf, "num_key_value_heads", None) or num_heads,
            head_size=head_size,
            dtype=model_config.dtype,
            block_size=cache_config.block_size,
        )


def determine_num_blocks(spec: KVCacheSpec, cache_config: CacheConfig, available_bytes: int, device: str) -> int:
    """Blocks from, in order: the override, an explicit byte budget, or a fraction of free memory."""
    if cache_config.num_gpu_blocks_override is not None:
        return cache_config.num_gpu_blocks_override
    if cache_config.kv_cache_memory is not None:
        budget = cache_config.kv_cache_memory
    elif device == "cpu":
        budget = min(DEFAULT_CPU_KV_CACHE_BYTES, int(available_bytes * cache_config.gpu_memory_utilization))
    else:
        budget = int(available_bytes * cache_config.gpu_memory_utilization)
    num_blocks = budget // spec.bytes_per_block
    if num_blocks < 1:
        raise ValueError(
            f"KV cache budget of {budget} bytes holds no block of {spec.bytes_per_block} bytes; "
            "raise kv_cache_memory or gpu_memory_utilization."
        )
    return num_blocks


def allocate_kv_caches(
    spec: KVCacheSpec, num_blocks: int, backend: AttentionBackend, device: torch.device
) -> list[torch.Tensor]:
    shape = backend.kv_cache_shape(num_blocks, spec.block_size, spec.num_kv_heads, spec.head_size)
    dtype = getattr(torch, spec.dtype)
    # zeros, not empty: a slot that is read before it is written must not hold NaNs that leak
    # through a zero attention weight (0 * NaN = NaN).
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(spec.num_layers)]
