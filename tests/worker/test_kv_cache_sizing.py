"""The KV cache's size without a memory profile (worker/kv_cache.py): on the CPU by default what
the scheduler can use (max_num_seqs requests of max_model_len tokens), capped at 4 GiB and at a
fraction of the available memory; an override or kv_cache_memory wins."""
from __future__ import annotations

import logging

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
