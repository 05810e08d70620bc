"""TorchAttentionBackend against a naive per-token loop over the logical (unpaged) K/V."""
from __future__ import annotations

import math
import random

import pytest
import torch

from pagedllm.attention.registry import create_backend, get_backend_class
from pagedllm.attention.torch_ref import TorchAttentionBackend
from tests.helpers.attn_metadata import build_metadata


def naive_attention(
    q: torch.Tensor,  # [q, H, D]
    k: torch.Tensor,  # [S, KV, D] whole context, new tokens last
    v: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    num_new, num_heads, _ = q.shape
    seq_len, kv_heads, _ = k.shape
    group = num_heads // kv_heads
    out = torch.empty_like(q)
    for i in range(num_new):
        visible = seq_len - num_new + i + 1
        for h in range(num_heads):
            kh = h // group
            scores = (k[:visible, kh].double() @ q[i, h].double()) * scale
            out[i, h] = (torch.softmax(scores, 0) @ v[:visible, kh].double()).to(q.dtype)
    return out


def run_case(num_cached: list[int], num_new: list[int], num_heads: int, kv_heads: int,
             head_size: int = 16, block_size: int = 4, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    seq_lens = [c + n for c, n in zip(num_cached, num_new)]
    blocks_needed = [-(-s // block_size) for s in seq_lens]
    num_blocks = sum(blocks_needed) + 5
    free = list(range(num_blocks))
    rng.shuffle(free)  # non-contiguous, out-of-order block ids
    block_lists = [[free.pop() for _ in range(n)] for n in blocks_needed]
    # NaN everywhere not written: reading (or multiplying by 0) a slot outside the context shows up.
    cache = torch.full(TorchAttentionBackend.kv_cache_shape(num_blocks, block_size, kv_heads, head_size),
                       float("nan"))
    # Logical K/V per request; write the cached prefix into the paged cache by hand.
    ks = [torch.randn(s, kv_heads, head_size, generator=gen) for s in seq_lens]
    vs = [torch.randn(s, kv_heads, head_size, generator=gen) for s in seq_lens]
    for k, v, cached, blocks in zip(ks, vs, num_cached, block_lists):
        for p in range(cached):
            cache[0, blocks[p // block_size], p % block_size] = k[p]
            cache[1, blocks[p // block_size], p % block_size] = v[p]
    md = build_metadata(num_cached, num_new, block_lists, block_size)
    query = torch.randn(sum(num_new), num_heads, head_size, generator=gen)
    key = torch.cat([k[c:] for k, c in zip(ks, num_cached)])
    value = torch.cat([v[c:] for v, c in zip(vs, num_cached)])
    scale = 1 / math.sqrt(head_size)

    out = TorchAttentionBackend().forward(query, key, value, cache, md, scale)

    qsl = md.query_start_loc_cpu
    for i in range(len(num_new)):
        ref = naive_attention(query[qsl[i]:qsl[i + 1]], ks[i], vs[i], scale)
        torch.testing.assert_close(out[qsl[i]:qsl[i + 1]], ref, atol=1e-5, rtol=1e-5)
    # The new tokens' K/V landed in their slots.
    for k, v, cached, blocks in zip(ks, vs, num_cached, block_lists):
        for p in range(cached, len(k)):
            assert torch.equal(cache[0, blocks[p // block_size], p % block_size], k[p])
            assert torch.equal(cache[1, blocks[p // block_size], p % block_size], v[p])


@pytest.mark.parametrize("num_heads,kv_heads", [(4, 4), (8, 2), (6, 1)])
def test_decode_only_batch(num_heads: int, kv_heads: int) -> None:
    run_case(num_cached=[0, 5, 12, 30, 3], num_new=[1, 1, 1, 1, 1], num_heads=num_heads, kv_heads=kv_heads)


@pytest.mark.parametrize("num_heads,kv_heads", [(4, 4), (8, 2)])
def test_prefill_only_without_cache(num_heads: int, kv_heads: int) -> None:
    run_case(num_cached=[0, 0, 0], num_new=[7, 1, 13], num_heads=num_heads, kv_heads=kv_heads)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixed_chunks_with_context_and_decodes(seed: int) -> None:
    # prefill from scratch, chunk after a cached prefix (not block aligned), decodes, a 1-token chunk
    run_case(num_cached=[0, 9, 17, 4, 0, 8], num_new=[6, 5, 1, 1, 1, 8], num_heads=8, kv_heads=2,
             block_size=4, seed=seed)


def test_block_size_16_long_context() -> None:
    run_case(num_cached=[40, 0, 33], num_new=[20, 1, 1], num_heads=6, kv_heads=3, block_size=16)


def test_padded_rows_are_zero_and_not_written() -> None:
    torch.manual_seed(0)
    block_size, kv_heads, head_size = 4, 2, 8
    cache = torch.zeros(TorchAttentionBackend.kv_cache_shape(6, block_size, kv_heads, head_size))
    md = build_metadata([0], [3], [[2]], block_size)
    q = torch.randn(5, 4, head_size)  # 3 real tokens + 2 padding rows
    k = torch.randn(5, kv_heads, head_size)
    v = torch.randn(5, kv_heads, head_size)
    out = TorchAttentionBackend().forward(q, k, v, cache, md, 0.3)
    assert torch.all(out[3:] == 0)
    assert torch.count_nonzero(cache[0].flatten(0, 1).abs().sum((-1, -2))) == 3


def test_registry() -> None:
    assert isinstance(create_backend("torch"), TorchAttentionBackend)
    assert get_backend_class("torch") is TorchAttentionBackend
    with pytest.raises(ValueError, match="nope.*supported: cpu_paged, torch, triton"):
        get_backend_class("nope")


def test_attention_backend_choice_takes_effect() -> None:
    """KernelConfig.attention_backend (the former PAGEDLLM_ATTENTION_BACKEND): the platform builds
    the named backend; unset, its own choice; an unknown name fails when the config is made."""
    from pagedllm.attention.base import AttentionBackendOptions
    from pagedllm.attention.cpu_paged import CpuPagedAttentionBackend
    from pagedllm.config import KernelConfig
    from pagedllm.platforms.cpu import CpuPlatform

    platform, options = CpuPlatform(), AttentionBackendOptions()
    assert type(platform.make_attention_backend(KernelConfig(), options)) is CpuPagedAttentionBackend
    chosen = platform.make_attention_backend(KernelConfig(attention_backend="torch"), options)
    assert type(chosen) is TorchAttentionBackend
    with pytest.raises(ValueError, match="attention_backend must be one of cpu_paged, torch, triton"):
        KernelConfig(attention_backend="flash")


def test_prologue_runs_on_the_reference_backend() -> None:
    """A model planned for a fusing backend hands over a QKVPrologue; the torch backend applies it
    in torch ops (norm scale, q/k head norms, rotary), the same as the layers' own native paths
    one after another, so such a model runs on the oracle too."""
    from pagedllm.attention.base import QKVPrologue
    from pagedllm.kernels.reference import scale_rows_by_inv_rms
    from pagedllm.layers.norm import RMSNorm
    from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding
    from tests.helpers.attn_metadata import build_metadata

    gen = torch.Generator().manual_seed(3)
    heads, kv_heads, head_size, n = 4, 2, 16, 5
    rope = RotaryEmbedding(head_size, head_size, 64, RopeConfig(theta=10000.0, rope_type="default", params={}))
    q_norm, k_norm = RMSNorm(head_size, 1e-6, torch.float32), RMSNorm(head_size, 1e-6, torch.float32)
    with torch.no_grad():
        q_norm.weight.copy_(1 + torch.rand(head_size, generator=gen))
        k_norm.weight.copy_(1 + torch.rand(head_size, generator=gen))
    q = torch.randn(n, heads, head_size, generator=gen)
    k, v = torch.randn(n, kv_heads, head_size, generator=gen), torch.randn(n, kv_heads, head_size, generator=gen)
    h = torch.randn(n, 40, generator=gen) * 3
    positions = torch.arange(3, 3 + n)
    md = build_metadata([3], [n], [[0, 1]], block_size=8)
    prologue = QKVPrologue(positions, rope.cos_sin_cache, (q_norm.weight, k_norm.weight, 1e-6), (h, 1e-5))
    got = TorchAttentionBackend().forward(q, k, v, torch.zeros(2, 2, 8, kv_heads, head_size), md, 0.25, prologue)
    sq, sk, sv = (scale_rows_by_inv_rms(x, h, 1e-5) for x in (q, k, v))
    sq, sk = q_norm.forward_native(sq), k_norm.forward_native(sk)
    rq, rk = rope.forward_native(positions, sq.reshape(n, -1), sk.reshape(n, -1))
    want = TorchAttentionBackend().forward(rq.view(n, heads, head_size), rk.view(n, kv_heads, head_size), sv,
                                           torch.zeros(2, 2, 8, kv_heads, head_size), md, 0.25)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
