"""The C++ paged decode kernel against the torch reference backend (the oracle)."""
from __future__ import annotations

import pytest
import torch

from pagedllm.attention.base import AttentionBackendOptions, AttentionMetadata
from pagedllm.attention.cpu_paged import CpuPagedAttentionBackend
from pagedllm.kernels.cpu import load_cpu_kernels
from pagedllm.attention.torch_ref import TorchAttentionBackend


@pytest.fixture(scope="module")
def backend() -> CpuPagedAttentionBackend:
    b = CpuPagedAttentionBackend(AttentionBackendOptions(cpu_kernels=load_cpu_kernels()))
    if b.kernels is None:
        pytest.skip("the C++ CPU kernels cannot be built on this machine")
    return b


def _decode_metadata(seq_lens: list[int], block_size: int, num_blocks: int, gen: torch.Generator) -> AttentionMetadata:
    max_blocks = max(-(-s // block_size) for s in seq_lens) + 1  # one spare column of padding
    perm = torch.randperm(num_blocks, generator=gen)
    table = perm[: len(seq_lens) * max_blocks].view(len(seq_lens), max_blocks).int()
    slots = [int(table[i, (s - 1) // block_size]) * block_size + (s - 1) % block_size for i, s in enumerate(seq_lens)]
    return AttentionMetadata(
        num_actual_tokens=len(seq_lens), num_reqs=len(seq_lens),
        query_start_loc=torch.arange(len(seq_lens) + 1, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32), block_table=table,
        slot_mapping=torch.tensor(slots, dtype=torch.int64), max_query_len=1, max_seq_len=max(seq_lens),
        block_size=block_size, query_start_loc_cpu=list(range(len(seq_lens) + 1)), seq_lens_cpu=seq_lens)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads,kv_heads,head_size", [(4, 4, 64), (9, 3, 64), (8, 1, 64), (8, 4, 128), (6, 2, 48)])
def test_decode_kernel_matches_torch(backend, dtype, tol, heads, kv_heads, head_size):
    """Groups and head sizes with a vector-register fast path in float32 (head 64 or 128, small
    groups) and without one (a group of 8, head 48)."""
    gen = torch.Generator().manual_seed(heads * 10 + kv_heads)
    block_size, num_blocks = 16, 96
    seq_lens = [1, 5, 16, 17, 40, 130]
    md = _decode_metadata(seq_lens, block_size, num_blocks, gen)
    cache = torch.randn(2, num_blocks, block_size, kv_heads, head_size, generator=gen).to(dtype)
    cache_ref = cache.clone()
    q = torch.randn(len(seq_lens), heads, head_size, generator=gen).to(dtype)
    k = torch.randn(len(seq_lens), kv_heads, head_size, generator=gen).to(dtype)
    v = torch.randn(len(seq_lens), kv_heads, head_size, generator=gen).to(dtype)
    expected = TorchAttentionBackend().forward(q, k, v, cache_ref, md, 0.125)
    got = backend.forward(q, k, v, cache, md, 0.125)
    torch.testing.assert_close(cache, cache_ref)  # the new K/V were written identically
    torch.testing.assert_close(got.float(), expected.float(), rtol=tol, atol=tol)


def test_kernel_never_reads_past_the_length(backend):
    gen = torch.Generator().manual_seed(0)
    md = _decode_metadata([3, 20], 16, 8, gen)
    cache = torch.full((2, 8, 16, 2, 32), float("nan"))
    for i, s in enumerate([3, 20]):  # fill only each request's own first s slots
        for t in range(s):
            blk = int(md.block_table[i, t // 16])
            cache[:, blk, t % 16] = torch.randn(2, 2, 32, generator=gen)
    q, k, v = (torch.randn(2, h, 32, generator=gen) for h in (4, 2, 2))
    out = backend.forward(q, k, v, cache, md, 0.2)
    assert torch.isfinite(out).all()


def _mixed_metadata(new_lens: list[int], cached_lens: list[int], block_size: int, num_blocks: int,
                    gen: torch.Generator) -> AttentionMetadata:
    """Requests with `cached_lens` tokens already in the cache and `new_lens` new ones each."""
    seq_lens = [c + n for c, n in zip(cached_lens, new_lens)]
    max_blocks = max(-(-s // block_size) for s in seq_lens) + 1
    table = torch.randperm(num_blocks, generator=gen)[: len(seq_lens) * max_blocks].view(len(seq_lens), -1).int()
    qsl = [0]
    slots = []
    for i, (c, s) in enumerate(zip(cached_lens, seq_lens)):
        qsl.append(qsl[-1] + s - c)
        slots += [int(table[i, t // block_size]) * block_size + t % block_size for t in range(c, s)]
    return AttentionMetadata(
        num_actual_tokens=qsl[-1], num_reqs=len(seq_lens), query_start_loc=torch.tensor(qsl, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32), block_table=table,
        slot_mapping=torch.tensor(slots, dtype=torch.int64), max_query_len=max(new_lens), max_seq_len=max(seq_lens),
        block_size=block_size, query_start_loc_cpu=qsl, seq_lens_cpu=seq_lens)


@pytest.mark.parametrize("heads,kv_heads,head_size", [(9, 3, 64), (4, 4, 64), (8, 2, 128), (8, 1, 64)])
@pytest.mark.parametrize("block_size", [16, 5])
def test_varlen_kernel_matches_torch(backend, heads, kv_heads, head_size, block_size):
    """A step with prompt tokens: fresh prompts (one longer than a 16-token tile, one not a
    multiple of 16), a chunk after a cached prefix, and decode tokens mixed in."""
    gen = torch.Generator().manual_seed(heads + block_size)
    new_lens, cached_lens = [37, 1, 16, 5, 1, 70], [0, 40, 0, 33, 129, 17]
    md = _mixed_metadata(new_lens, cached_lens, block_size, 200, gen)
    cache = torch.randn(2, 200, block_size, kv_heads, head_size, generator=gen)
    cache_ref = cache.clone()
    n = md.num_actual_tokens
    q = torch.randn(n, heads, head_size, generator=gen)
    k, v = (torch.randn(n, kv_heads, head_size, generator=gen) for _ in range(2))
    expected = TorchAttentionBackend().forward(q, k, v, cache_ref, md, 0.125)
    got = backend.forward(q, k, v, cache, md, 0.125)
    torch.testing.assert_close(cache, cache_ref)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("heads,kv_heads,head_size", [(9, 3, 64), (8, 1, 64), (32, 8, 128), (8, 2, 128)])
def test_decode_token_has_the_same_bits_in_both_kernels(backend, heads, kv_heads, head_size):
    """A decode token's attention is bit-identical whether its step is decode-only (the decode
    kernel) or mixed with a prompt chunk (the varlen kernel): greedy outputs of a quantized model
    must not depend on how the scheduler mixes requests."""
    gen = torch.Generator().manual_seed(heads)
    cache = torch.randn(2, 64, 16, kv_heads, head_size, generator=gen)
    _assert_decode_bits_equal_in_both_kernels(backend, cache, heads, gen)


def _assert_decode_bits_equal_in_both_kernels(backend, cache: torch.Tensor, heads: int, gen: torch.Generator) -> None:
    """A prompt and two decode tokens through the varlen kernel, the decodes alone through the
    decode kernel: the decodes' outputs have the same bits."""
    _, num_blocks, block_size, _, head_size = cache.shape
    md = _mixed_metadata([23, 1, 1], [0, 130, 17], block_size, num_blocks, gen)
    q = torch.randn(md.num_actual_tokens, heads, head_size, generator=gen)
    mixed = torch.empty_like(q)
    backend.kernels.paged_varlen_attention(mixed, q, cache[0], cache[1], md.block_table, md.seq_lens,
                                           md.query_start_loc, 0.125)
    decode = torch.empty(2, heads, head_size)
    backend.kernels.paged_decode_attention(decode, q[23:].contiguous(), cache[0], cache[1], md.block_table[1:],
                                           md.seq_lens[1:], 0.125)
    assert torch.equal(decode, mixed[23:])


def test_varlen_kernel_reads_only_visible_keys(backend):
    """Slots past each request's length hold NaN; causal keys after a token are finite but huge:
    neither may reach the output (a token must not see later tokens of its own prompt)."""
    gen = torch.Generator().manual_seed(1)
    md = _mixed_metadata([20, 3], [0, 9], 16, 12, gen)
    cache = torch.full((2, 12, 16, 1, 64), float("nan"))
    for i, c in enumerate([0, 9]):  # the cached prefix of request 1
        for t in range(c):
            cache[:, int(md.block_table[i, t // 16]), t % 16] = torch.randn(2, 1, 64, generator=gen)
    n = md.num_actual_tokens
    q = torch.randn(n, 2, 64, generator=gen)
    k = torch.randn(n, 1, 64, generator=gen)
    v = torch.randn(n, 1, 64, generator=gen)
    out = backend.forward(q, k, v, cache, md, 0.125)
    assert torch.isfinite(out).all()
    v_late = v.clone()
    v_late[10:20] = 1e6  # request 0's tokens 10-19: tokens 0-9 must not change
    out_late = backend.forward(q, k, v_late, cache.clone(), md, 0.125)
    assert torch.equal(out[:10], out_late[:10])


@pytest.mark.parametrize("rotary_dim", [64, 32])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 3e-2)])  # bf16: the kernel rounds once
def test_fused_rotary_matches_torch(backend, rotary_dim, dtype, tol):
    from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding

    rope = RotaryEmbedding(64, rotary_dim, 512, RopeConfig(theta=10000.0, rope_type="default", params={}))
    gen = torch.Generator().manual_seed(rotary_dim)
    positions = torch.randint(0, 512, (37,), generator=gen)
    qkv = torch.randn(37, (8 + 2 + 2) * 64, generator=gen).to(dtype)  # q/k are strided views of it
    q, k = qkv[:, : 8 * 64], qkv[:, 8 * 64 : 10 * 64]
    want_q, want_k = rope.forward_native(positions, q.clone(), k.clone())
    got_q, got_k = rope(positions, q, k)
    assert got_q.data_ptr() == qkv.data_ptr()  # rotated in place
    torch.testing.assert_close(got_q, want_q, rtol=tol, atol=tol)
    torch.testing.assert_close(got_k, want_k, rtol=tol, atol=tol)


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_rms_norm_matches_torch(backend, with_residual, dtype, tol):
    from pagedllm.layers.norm import RMSNorm

    gen = torch.Generator().manual_seed(3)
    norm = RMSNorm(576, 1e-5, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(576, generator=gen) + 0.5)
    x = torch.randn(13, 576, generator=gen).to(dtype) * 3
    residual = torch.randn(13, 576, generator=gen).to(dtype) if with_residual else None
    x_before = x.clone()
    want = norm.forward_native(x, residual)
    got = norm(x, residual)
    torch.testing.assert_close(x, x_before)  # inputs untouched
    if with_residual:
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)  # the sum rounds exactly like torch's add
        torch.testing.assert_close(got[0], want[0], rtol=tol, atol=tol)
    else:
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("temperature", [None, 0.7])  # None: logits already scaled
def test_sample_from_logits_inverts_the_cdf(temperature):
    """The C++ inverse-CDF sampler against a float64 reference: the same token wherever the
    target is not within float32 rounding of a boundary; masked (-inf) tokens never picked."""
    from pagedllm.kernels.cpu import avx512_kernels

    kernels = avx512_kernels()
    if kernels is None:
        pytest.skip("no AVX-512 kernels here")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1000, generator=gen) * 3
    logits[:, 500:] = float("-inf")  # a truncated tail
    logits[3, :] = float("-inf")
    logits[3, 7] = 0.0  # one allowed token
    u = torch.rand(64, generator=gen)
    u[5] = 0.0
    if temperature is None:
        got = kernels.sample_from_logits(logits, u)
        scaled = logits.double()
    else:
        got = kernels.sample_from_logits(logits, u, torch.full((64,), 1 / temperature))
        scaled = logits.double() / temperature
    w = (scaled - scaled.amax(-1, keepdim=True)).exp()
    cdf = w.cumsum(-1)
    target = u.double()[:, None] * cdf[:, -1:]
    want = torch.searchsorted(cdf, target, right=True).squeeze(1)
    assert (got < 500).all() and got[3] == 7 and got[5] == 0
    near = ((cdf - target).abs() / cdf[:, -1:] < 1e-5).any(-1)
    assert torch.equal(got[~near], want[~near])


@pytest.mark.parametrize("inter", [1536, 45])  # 45: a masked tail in every row
def test_silu_and_mul_matches_torch(inter):
    """The C++ SiLU-and-mul through the layer, against torch's, on large |gate| of both signs
    (the two forms of silu) and on row-strided input."""
    from pagedllm.kernels.cpu import avx512_kernels
    from pagedllm.layers.activation import SiluAndMul

    if avx512_kernels() is None:
        pytest.skip("no AVX-512 kernels here")
    gen = torch.Generator().manual_seed(inter)
    wide = torch.randn(7, 2 * inter + 10, generator=gen) * 8
    x = wide[:, : 2 * inter]  # rows strided
    layer = SiluAndMul()
    torch.testing.assert_close(layer(x), layer.forward_native(x), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("heads,kv_heads,head_size", [(9, 3, 64), (8, 2, 128), (6, 2, 48)])
def test_a_bfloat16_cache_under_float32_activations(backend, heads, kv_heads, head_size):
    """kv_cache_dtype bfloat16: the write rounds as torch does, both kernels widen exactly (against
    the torch reference on the same cache), and a decode token keeps the same bits in either."""
    gen = torch.Generator().manual_seed(heads + head_size)
    block_size, num_blocks = 16, 64
    for md in (_mixed_metadata([23, 1, 1], [0, 130, 17], block_size, num_blocks, gen),
               _decode_metadata([1, 40, 129], block_size, num_blocks, gen)):
        cache = torch.randn(2, num_blocks, block_size, kv_heads, head_size, generator=gen).bfloat16()
        cache_ref = cache.clone()
        n = md.num_actual_tokens
        q = torch.randn(n, heads, head_size, generator=gen)
        k, v = (torch.randn(n, kv_heads, head_size, generator=gen) for _ in range(2))
        expected = TorchAttentionBackend().forward(q, k, v, cache_ref, md, 0.125)
        got = backend.forward(q, k, v, cache, md, 0.125)
        assert torch.equal(cache, cache_ref)  # the new rows rounded to bfloat16 identically
        torch.testing.assert_close(got, expected, rtol=2e-5, atol=2e-5)
    if head_size != 48:  # (the varlen kernel takes head sizes 64 and 128)
        _assert_decode_bits_equal_in_both_kernels(backend, cache, heads, gen)
