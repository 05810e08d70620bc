"""KV-cache sizing arithmetic (worker/memory.py) and the CUDA-graph size ladder, without a GPU."""
from __future__ import annotations

import logging

import pytest

from pagedllm.worker.cuda_graphs import default_graph_sizes
from pagedllm.worker.memory import MemoryProfile, kv_cache_budget, plan_kv_cache

GiB = 1 << 30
MiB = 1 << 20


def test_budget_subtracts_everything_from_the_utilized_total():
    profile = MemoryProfile(total_bytes=80 * GiB, in_use_bytes=17 * GiB, weights_bytes=16 * GiB,
                            peak_activation_bytes=2 * GiB, cuda_graph_bytes=512 * MiB)
    # 0.9 * 80 = 72 GiB; minus 17 in use (weights included) + 2 + 0.5
    assert kv_cache_budget(profile, 0.9) == int(72 * GiB) - 19 * GiB - 512 * MiB


def test_budget_negative_when_weights_do_not_leave_room():
    profile = MemoryProfile(10 * GiB, 9 * GiB, 8 * GiB, 1 * GiB, 0)
    assert kv_cache_budget(profile, 0.9) < 0


def test_plan_counts_whole_blocks_and_concurrency():
    plan = plan_kv_cache(budget_bytes=100 * MiB + 5, bytes_per_block=2 * MiB, block_size=16,
                         max_model_len=400, max_model_len_explicit=True)
    assert plan.num_blocks == 50
    assert plan.max_model_len == 400
    assert plan.max_concurrency == pytest.approx(50 * 16 / 400)


def test_derived_max_model_len_is_lowered_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        plan = plan_kv_cache(10 * MiB, 1 * MiB, 16, max_model_len=8192, max_model_len_explicit=False)
    assert plan.num_blocks == 10 and plan.max_model_len == 160
    assert plan.max_concurrency == pytest.approx(1.0)
    assert "lowered to 160" in caplog.text


def test_explicit_max_model_len_that_does_not_fit_is_an_error():
    with pytest.raises(ValueError, match="max_model_len=8192 needs 512 KV blocks but only 10 fit"):
        plan_kv_cache(10 * MiB, 1 * MiB, 16, max_model_len=8192, max_model_len_explicit=True)


@pytest.mark.parametrize("budget", [-5 * GiB, 0, 1023])
def test_no_block_at_all_is_an_error_not_an_oom(budget):
    with pytest.raises(ValueError, match="No KV cache block fits"):
        plan_kv_cache(budget, 1024, 16, max_model_len=128, max_model_len_explicit=False)


def test_graph_sizes_follow_vllm_ladder():
    assert default_graph_sizes(1) == [1]
    assert default_graph_sizes(6) == [1, 2, 4, 6]
    assert default_graph_sizes(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    sizes = default_graph_sizes(512)
    assert sizes[:4] == [1, 2, 4, 8] and sizes[-1] == 512
    assert 256 in sizes and 272 in sizes and 264 not in sizes
    assert sizes == sorted(set(sizes))
