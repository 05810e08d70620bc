"""Piecewise CUDA graphs, the parts that run anywhere: which token counts are captured, which size
a step runs at, and the copy of q/k/v into the static buffers. The graphs themselves are checked
on the GPU (tests/gpu/test_invariance_gpu.py)."""
from __future__ import annotations

import pytest
import torch

from pagedllm.config import DeviceConfig
from pagedllm.worker.piecewise_graphs import (MAX_CAPTURED_SIZE, MAX_PADDED_SIZE, _StaticBuffers, copy_qkv,
                                              default_piecewise_sizes, piecewise_padded_size)


def test_sizes_are_a_fine_ladder_up_to_512_then_the_step_budget():
    sizes = default_piecewise_sizes(2048)
    assert sizes[:8] == list(range(16, 129, 16))
    assert sizes[-2:] == [MAX_PADDED_SIZE, 2048]
    assert all(b - a <= a // 4 + 16 for a, b in zip(sizes, sizes[1:-1]))  # padding at most about a quarter
    assert default_piecewise_sizes(40) == [16, 32, 40]
    # A very large budget is not captured: its pool would take that much activation memory from
    # the KV cache, and a step that large is bound by its GPU work anyway.
    assert default_piecewise_sizes(4 * MAX_CAPTURED_SIZE)[-1] == MAX_PADDED_SIZE


def test_unknown_cuda_graph_mode_is_refused():
    with pytest.raises(ValueError, match="cuda_graph_mode"):
        DeviceConfig(cuda_graph_mode="piecewise_everything")
    assert DeviceConfig().cuda_graph_mode == "full_and_piecewise"


def test_small_steps_pad_up_large_ones_only_run_at_an_exact_size():
    sizes = default_piecewise_sizes(2048)
    assert piecewise_padded_size(sizes, 1) == 16
    assert piecewise_padded_size(sizes, 129) == 160
    assert piecewise_padded_size(sizes, 512) == 512
    assert piecewise_padded_size(sizes, 513) is None  # would pad to 2048: eager
    assert piecewise_padded_size(sizes, 2048) == 2048  # a full step of a busy server
    assert piecewise_padded_size(sizes, 2049) is None


def _buffers(rows: int, heads: int, kv_heads: int, head: int) -> _StaticBuffers:
    return _StaticBuffers(torch.zeros(rows, (heads + 2 * kv_heads) * head), torch.zeros(rows, heads, head))


def test_qkv_views_of_the_merged_gemm_output_copy_whole_rows():
    heads, kv_heads, head, size = 4, 2, 8, 5
    qkv = torch.randn(size, (heads + 2 * kv_heads) * head)
    query, key, value = qkv.split([heads * head, kv_heads * head, kv_heads * head], dim=-1)
    query, key, value = (t.view(size, -1, head) for t in (query, key, value))
    buffers = _buffers(16, heads, kv_heads, head)
    q, k, v, out = buffers.views(size, heads, kv_heads, head)
    copy_qkv(q, k, v, query, key, value)
    assert torch.equal(buffers.qkv[:size], qkv) and not buffers.qkv[size:].any()
    assert (q.shape, k.shape, v.shape, out.shape) == ((size, heads, head), (size, kv_heads, head),
                                                      (size, kv_heads, head), (size, heads, head))
    assert torch.equal(q, query) and torch.equal(k, key) and torch.equal(v, value)


def test_separate_q_k_v_tensors_are_copied_one_by_one():
    heads, kv_heads, head, size = 4, 2, 8, 3
    query, key, value = torch.randn(size, heads, head), torch.randn(size, kv_heads, head), torch.randn(size, kv_heads, head)
    buffers = _buffers(8, heads, kv_heads, head)
    q, k, v, _ = buffers.views(size, heads, kv_heads, head)
    copy_qkv(q, k, v, query, key, value)
    assert torch.equal(q, query) and torch.equal(k, key) and torch.equal(v, value)
    assert not buffers.qkv[size:].any()
