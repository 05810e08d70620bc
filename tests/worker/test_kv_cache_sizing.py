"""The KV cache's size without a memory profile (worker/kv_cache.py): on the CPU by default what
the scheduler can use (max_num_seqs requests of max_model_len tokens), capped at 4 GiB and at a
fraction of the available memory; an override or kv_cache_memory wins."""
from __future__ import annotations

import logging

import torch

import pytest

from pagedllm.config import CacheConfig
from pagedllm.worker.kv_cache import DEFAULT_CPU_KV_CACHE_BYTES, KVCacheSpec, determine_num_blocks

GiB = 1 << 30
# SmolLM2-135M in float32: 30 layers x 3 kv heads x 64, 45 KiB a token, 720 KiB a block of 16
SPEC = KVCacheSpec(num_layers=30, num_kv_heads=3, head_size=64, dtype="float32", block_size=16)
PLENTY = 64 * GiB


def _blocks(max_num_seqs: int, max_model_len: int, available: int = PLENTY, device: str = "cpu",
            **cache: float | int) -> int:
    return determine_num_blocks(SPEC, CacheConfig(**cache), available, device,
                                max_num_seqs=max_num_seqs, max_model_len=max_model_len)


def test_cpu_default_is_what_the_scheduler_can_use():
    # 8 requests of 1000 tokens: 63 blocks each (the last one partly filled), not 4 GiB's 5825
    assert _blocks(8, 1000) == 8 * 63
    assert _blocks(1, 16) == 1
    assert _blocks(4, 2048) * SPEC.bytes_per_block == 4 * 2048 * 45 * 1024


def test_cpu_default_is_capped_at_4_gib():
    # 256 requests of 8192 tokens would take 90 GiB
    assert _blocks(256, 8192) == DEFAULT_CPU_KV_CACHE_BYTES // SPEC.bytes_per_block == 5825


def test_cpu_default_is_capped_at_the_available_fraction():
    assert _blocks(256, 8192, available=2 * GiB) == int(2 * GiB * 0.9) // SPEC.bytes_per_block
    assert _blocks(256, 8192, available=2 * GiB, gpu_memory_utilization=0.5) == GiB // SPEC.bytes_per_block
    assert _blocks(2, 128, available=2 * GiB) == 2 * 8  # the demand is the least of the three


def test_explicit_sizes_win_over_the_default():
    assert _blocks(1, 16, kv_cache_memory=GiB) == GiB // SPEC.bytes_per_block
    assert _blocks(256, 8192, num_gpu_blocks_override=7) == 7


def test_devices_without_a_profile_keep_the_available_fraction():
    assert _blocks(1, 16, available=8 * GiB, device="mps") == int(8 * GiB * 0.9) // SPEC.bytes_per_block


def test_no_block_fits_is_an_error():
    with pytest.raises(ValueError, match="holds no block"):
        _blocks(1, 16, kv_cache_memory=1024)


def test_the_choice_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="pagedllm.worker.kv_cache"):
        _blocks(8, 1000)
    assert "KV cache size (CPU default): 354.4 MiB" in caplog.text
    assert "max_num_seqs 8 x max_model_len 1000" in caplog.text


def test_latent_attention_caches_one_shared_row_per_token(tiny_hf_model):
    """MLA (DeepSeek): one row of kv_lora_rank + qk_rope_head_dim a token and layer, K and V alike,
    allocated once; the KV budget counts it once."""
    from pagedllm.attention.torch_ref import TorchAttentionBackend
    from pagedllm.config import CacheConfig, ModelConfig
    from pagedllm.models.loader import load_hf_config
    from pagedllm.worker.kv_cache import KVCacheSpec, allocate_kv_caches

    tiny = tiny_hf_model("deepseek_v3")
    hf = load_hf_config(tiny.source)
    spec = KVCacheSpec.from_configs(ModelConfig(tiny.folder, None, None, hf, "float32", 256), CacheConfig(block_size=4))
    assert (spec.num_kv_heads, spec.head_size, spec.shared_kv) == (1, 32 + 8, True)
    assert spec.bytes_per_block == hf.num_hidden_layers * 4 * 40 * 4  # not twice: K and V are the same rows
    [cache, *_] = allocate_kv_caches(spec, 3, TorchAttentionBackend(), torch.device("cpu"))
    cache[0, 1, 2, 0, 5] = 7.0
    assert cache[1, 1, 2, 0, 5] == 7.0 and cache.untyped_storage().nbytes() == 3 * 4 * 40 * 4
