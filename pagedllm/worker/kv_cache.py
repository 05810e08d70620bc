"""Sizing and allocating the paged KV cache: one tensor per layer, K and V stacked."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pagedllm.attention.base import AttentionBackend
from pagedllm.config import CacheConfig, ModelConfig
from pagedllm.distributed.parallel_state import SINGLE_STAGE, PipelineStage

logger = logging.getLogger(__name__)

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1}
# On the CPU there is no device memory to fill: the default cache is what the scheduler can use,
# at most this much (vLLM's CPU backend defaults to the same fixed space).
DEFAULT_CPU_KV_CACHE_BYTES = 4 << 30
_MiB = 1 << 20


@dataclass(frozen=True)
class KVCacheSpec:
    num_layers: int
    num_kv_heads: int
    head_size: int
    dtype: str
    block_size: int
    # A draft model's cache shares the block table (spec_decode/draft_model.py): its bytes per
    # block are spent on every block too.
    extra_bytes_per_block: int = 0
    # K and V are the same rows, stored once (MLA's latent: models/common.KVLayout)
    shared_kv: bool = False
    # A pipeline stage holds layers first_layer .. first_layer + num_layers - 1 of total_layers
    # (the attention layers index the cache list by their model-wide number).
    first_layer: int = 0
    total_layers: int | None = None  # None: num_layers

    @property
    def bytes_per_block(self) -> int:
        # K and V (or the shared rows), all layers
        rows = 1 if self.shared_kv else 2
        return (rows * self.num_layers * self.block_size * self.num_kv_heads * self.head_size
                * _DTYPE_BYTES[self.dtype] + self.extra_bytes_per_block)

    @staticmethod
    def from_configs(model_config: ModelConfig, cache_config: CacheConfig,
                     tensor_parallel_size: int = 1, stage: PipelineStage = SINGLE_STAGE) -> KVCacheSpec:
        """The cache of one rank (its KV heads under tensor parallelism, its stage's layers)."""
        from pagedllm.models.registry import get_model_class

        hf = model_config.hf_config
        layout = get_model_class(model_config.architecture).kv_cache_layout(hf)  # type: ignore[attr-defined]
        # (every registered class has it: DecoderForCausalLM's, the EAGLE heads', MLA's)
        layout = layout.per_rank(tensor_parallel_size)
        first, end = stage.layer_range(hf.num_hidden_layers)
        return KVCacheSpec(
            num_layers=end - first,
            first_layer=first,
            total_layers=hf.num_hidden_layers,
            num_kv_heads=layout.num_kv_heads,
            head_size=layout.head_size,
            dtype=cache_config.cache_dtype or model_config.dtype,
            block_size=cache_config.block_size,
            shared_kv=layout.shared,
        )


def determine_num_blocks(spec: KVCacheSpec, cache_config: CacheConfig, available_bytes: int, device: str,
                         max_num_seqs: int, max_model_len: int) -> int:
    """Blocks from, in order: the override, an explicit byte budget, on the CPU the default below,
    else (a device without a memory profile) a fraction of free memory."""
    if cache_config.num_gpu_blocks_override is not None:
        logger.info("KV cache size: num_gpu_blocks_override = %d blocks", cache_config.num_gpu_blocks_override)
        return cache_config.num_gpu_blocks_override
    if cache_config.kv_cache_memory is not None:
        budget = cache_config.kv_cache_memory
        logger.info("KV cache size: kv_cache_memory = %.0f MiB", budget / _MiB)
    elif device == "cpu":
        budget = default_cpu_kv_cache_bytes(spec, max_num_seqs, max_model_len, available_bytes,
                                            cache_config.gpu_memory_utilization)
    else:
        budget = int(available_bytes * cache_config.gpu_memory_utilization)
    num_blocks = budget // spec.bytes_per_block
    if num_blocks < 1:
        raise ValueError(
            f"KV cache budget of {budget} bytes holds no block of {spec.bytes_per_block} bytes; "
            "raise kv_cache_memory or gpu_memory_utilization."
        )
    return num_blocks


def default_cpu_kv_cache_bytes(spec: KVCacheSpec, max_num_seqs: int, max_model_len: int, available_bytes: int,
                               memory_fraction: float) -> int:
    """The CPU's default KV cache: the least of
      * what the scheduler can hold at once: max_num_seqs requests of max_model_len tokens, each
        rounded up to whole blocks (more would never be written by running requests),
      * DEFAULT_CPU_KV_CACHE_BYTES,
      * memory_fraction (gpu_memory_utilization) of the memory available now.
    No headroom beyond the first bound: it assumes every running request at its full context, so
    real workloads leave blocks of it free, and those hold the prefix cache (a prefix shared by
    running requests takes its blocks once)."""
    blocks_per_request = -(-max_model_len // spec.block_size)
    demand = max_num_seqs * blocks_per_request * spec.bytes_per_block
    available = int(available_bytes * memory_fraction)
    budget = min(demand, DEFAULT_CPU_KV_CACHE_BYTES, available)
    logger.info("KV cache size (CPU default): %.1f MiB = min(%.1f MiB for max_num_seqs %d x max_model_len %d, "
                "the %.0f MiB cap, %.0f%% of %.0f MiB available); kv_cache_memory sets it", budget / _MiB,
                demand / _MiB, max_num_seqs, max_model_len, DEFAULT_CPU_KV_CACHE_BYTES / _MiB, memory_fraction * 100,
                available_bytes / _MiB)
    return budget


def allocate_kv_caches(
    spec: KVCacheSpec, num_blocks: int, backend: AttentionBackend, device: torch.device
) -> list[torch.Tensor]:
    shape = backend.kv_cache_shape(num_blocks, spec.block_size, spec.num_kv_heads, spec.head_size)
    dtype = getattr(torch, spec.dtype)
    # zeros, not empty: a slot that is read before it is written must not hold NaNs that leak
    # through a zero attention weight (0 * NaN = NaN).
    if spec.shared_kv:  # one tensor seen as both halves: K and V writes land on the same rows
        held = [torch.zeros((1, *shape[1:]), dtype=dtype, device=device).expand(shape)
                for _ in range(spec.num_layers)]
    else:
        held = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(spec.num_layers)]
    # the layers of other pipeline stages: empty places, so that layer i's cache is caches[i]
    absent = torch.empty(0, dtype=dtype, device=device)
    after = (spec.total_layers or spec.num_layers) - spec.first_layer - spec.num_layers
    return [absent] * spec.first_layer + held + [absent] * after
