"""The fused Triton RMSNorm, rotary and SiLU-and-mul kernels against the layers' torch paths.

Under the interpreter (no GPU) the kernels are called directly on CPU tensors; on a GPU the
layers themselves are called too, so their CUDA dispatch is what gets checked. Outputs are
NaN-poisoned where the kernel writes into a caller's buffer.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.kernels.triton.activation import silu_and_mul  # noqa: E402
from pagedllm.kernels.triton.rms_norm import rms_norm  # noqa: E402
from pagedllm.kernels.triton.reshape_and_cache import reshape_and_cache  # noqa: E402
from pagedllm.kernels.triton.rotary import rotary_embedding_, rotary_embedding_and_cache_  # noqa: E402
from pagedllm.layers.activation import SiluAndMul  # noqa: E402
from pagedllm.layers.norm import RMSNorm  # noqa: E402
from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Relative error ||got - want|| / ||want||: each kernel rounds where the torch path does, so what is
# left is float32 rounding order (rsqrt, exp), about one ulp of the dtype on a few elements.
REL_TOL = {torch.float32: 1e-6, torch.bfloat16: 4e-3, torch.float16: 5e-4}


def assert_close_rel(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    assert not got.isnan().any(), "NaN in output: an element was not written"
    err = ((got.float() - want.float()).norm() / want.float().norm()).item()
    assert err < REL_TOL[dtype], f"relative error {err:.2e} over {REL_TOL[dtype]:.0e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [64, 576, 1000])  # 1000: not a power of two, the tail is masked
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm(dtype, hidden, with_residual):
    gen = torch.Generator().manual_seed(hidden)
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        norm = RMSNorm(hidden, 1e-5, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(hidden, generator=gen) + 0.5)
    x = (torch.randn(13, hidden, generator=gen) * 3).to(DEVICE, dtype)
    residual = torch.randn(13, hidden, generator=gen).to(DEVICE, dtype) if with_residual else None
    x_before = x.clone()
    want = norm.forward_native(x, residual)
    got_out, got_residual = rms_norm(x, norm.weight.data, norm.eps, residual)
    assert torch.equal(x, x_before)  # inputs untouched
    if with_residual:
        assert torch.equal(got_residual, want[1])  # the sum rounds exactly like torch's add
        assert_close_rel(got_out, want[0], dtype)
    else:
        assert got_residual is None
        assert_close_rel(got_out, want, dtype)
    if ON_GPU:  # the layer's CUDA dispatch takes the kernel
        layer_out = norm(x, residual)
        assert torch.equal(layer_out[0] if with_residual else layer_out, got_out)


def test_rms_norm_strided_rows():
    x_full = torch.randn(7, 2 * 128).to(DEVICE)
    x = x_full[:, :128]  # rows 256 apart
    weight = torch.rand(128).to(DEVICE) + 0.5
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        norm = RMSNorm(128, 1e-6, torch.float32)
    with torch.no_grad():
        norm.weight.copy_(weight)
    assert_close_rel(rms_norm(x, weight, 1e-6)[0], norm.forward_native(x), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_size,rotary_dim,heads,kv_heads", [(64, 64, 8, 2), (128, 128, 6, 1), (64, 32, 4, 4)])
def test_rotary_in_place(dtype, head_size, rotary_dim, heads, kv_heads):
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        rope = RotaryEmbedding(head_size, rotary_dim, 512, RopeConfig(theta=10000.0, rope_type="default", params={}))
    gen = torch.Generator().manual_seed(head_size + rotary_dim)
    positions = torch.randint(0, 512, (37,), generator=gen).to(DEVICE)
    # q and k as strided views of one fused qkv tensor, as the attention layers pass them
    qkv = torch.randn(37, (heads + 2 * kv_heads) * head_size, generator=gen).to(DEVICE, dtype)
    q, k = qkv[:, : heads * head_size], qkv[:, heads * head_size : (heads + kv_heads) * head_size]
    v_before = qkv[:, (heads + kv_heads) * head_size :].clone()
    want_q, want_k = rope.forward_native(positions, q.clone(), k.clone())
    rotary_embedding_(positions, q, k, rope.cos_sin_cache, head_size)
    assert_close_rel(q, want_q, dtype)
    assert_close_rel(k, want_k, dtype)
    assert torch.equal(qkv[:, (heads + kv_heads) * head_size :], v_before)  # v untouched
    if ON_GPU:
        q2, k2 = want_q.clone(), want_k.clone()  # any input: compare the layer with the kernel
        q3, k3 = q2.clone(), k2.clone()
        rope(positions, q2, k2)
        rotary_embedding_(positions, q3, k3, rope.cos_sin_cache, head_size)
        assert torch.equal(q2, q3) and torch.equal(k2, k3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_size,rotary_dim,heads,kv_heads", [(64, 64, 8, 2), (128, 128, 6, 1), (64, 32, 4, 4)])
def test_rotary_and_cache_equals_rotary_then_cache_write(dtype, head_size, rotary_dim, heads, kv_heads):
    """The fused kernel does bit for bit what rotary_embedding_ then reshape_and_cache do: q and k
    rotated in place, the first num_actual tokens' K/V at their slots (slot -1 skipped, the rest of
    a NaN-poisoned cache untouched)."""
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        rope = RotaryEmbedding(head_size, rotary_dim, 512, RopeConfig(theta=10000.0, rope_type="default", params={}))
    gen = torch.Generator().manual_seed(7 * head_size + heads)
    num_tokens, num_actual, block_size, num_blocks = 21, 19, 4, 12
    positions = torch.randint(0, 512, (num_tokens,), generator=gen).to(DEVICE)
    qkv = torch.randn(num_tokens, (heads + 2 * kv_heads) * head_size, generator=gen).to(DEVICE, dtype)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[3] = -1  # a padded token
    slots = slots.to(DEVICE)
    cache = torch.full((2, num_blocks, block_size, kv_heads, head_size), float("nan"), dtype=dtype, device=DEVICE)

    def split(t: torch.Tensor) -> list[torch.Tensor]:
        return list(t.split([heads * head_size, kv_heads * head_size, kv_heads * head_size], dim=1))

    want_qkv, want_cache = qkv.clone(), cache.clone()
    wq, wk, wv = split(want_qkv)
    rotary_embedding_(positions, wq, wk, rope.cos_sin_cache, head_size)
    reshape_and_cache(wk.view(num_tokens, kv_heads, head_size), wv.view(num_tokens, kv_heads, head_size),
                      want_cache, slots, num_actual)
    q, k, v = split(qkv)
    rotary_embedding_and_cache_(positions, q, k, v, rope.cos_sin_cache, head_size, cache, slots, num_actual)
    assert torch.equal(qkv, want_qkv)
    assert torch.equal(cache.isnan(), want_cache.isnan())
    assert torch.equal(cache.nan_to_num(), want_cache.nan_to_num())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_size,heads,kv_heads", [(64, 8, 2), (128, 6, 1)])
def test_qk_norm_rotary_and_cache_equals_the_three_steps(dtype, head_size, heads, kv_heads):
    """Qwen3's per-head q/k RMSNorm fused in front of the rotary + cache write matches the torch
    norm (RMSNorm.forward_native), then rotary, then the cache write: the same roundings, so what
    is left is float32 summation order inside the norm."""
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        rope = RotaryEmbedding(head_size, head_size, 512, RopeConfig(theta=10000.0, rope_type="default", params={}))
    gen = torch.Generator().manual_seed(11 * head_size + heads)
    num_tokens, num_actual, block_size, num_blocks = 13, 12, 4, 8
    positions = torch.randint(0, 512, (num_tokens,), generator=gen).to(DEVICE)
    qkv = (3 * torch.randn(num_tokens, (heads + 2 * kv_heads) * head_size, generator=gen)).to(DEVICE, dtype)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens].to(DEVICE)
    cache = torch.full((2, num_blocks, block_size, kv_heads, head_size), float("nan"), dtype=dtype, device=DEVICE)
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        q_norm, k_norm = RMSNorm(head_size, 1e-6, dtype), RMSNorm(head_size, 1e-6, dtype)
    with torch.no_grad():
        q_norm.weight.copy_(1 + 0.1 * torch.randn(head_size, generator=gen))
        k_norm.weight.copy_(1 + 0.1 * torch.randn(head_size, generator=gen))

    def split(t: torch.Tensor) -> list[torch.Tensor]:
        return list(t.split([heads * head_size, kv_heads * head_size, kv_heads * head_size], dim=1))

    wq, wk, wv = split(qkv.clone())
    wq = q_norm.forward_native(wq.reshape(num_tokens, heads, head_size)).view(num_tokens, -1)
    wk = k_norm.forward_native(wk.reshape(num_tokens, kv_heads, head_size)).view(num_tokens, -1)
    want_cache = cache.clone()
    rotary_embedding_(positions, wq, wk, rope.cos_sin_cache, head_size)
    reshape_and_cache(wk.view(num_tokens, kv_heads, head_size), wv.view(num_tokens, kv_heads, head_size),
                      want_cache, slots, num_actual)
    q, k, v = split(qkv)
    rotary_embedding_and_cache_(positions, q, k, v, rope.cos_sin_cache, head_size, cache, slots, num_actual,
                                (q_norm.weight, k_norm.weight, 1e-6))
    assert_close_rel(q, wq, dtype)
    assert_close_rel(k, wk, dtype)
    assert torch.equal(cache[:, :, :, :, 0].isnan(), want_cache[:, :, :, :, 0].isnan())
    assert_close_rel(cache.nan_to_num(), want_cache.nan_to_num(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inter", [96, 2500])  # 2500: two column blocks, a masked tail
def test_silu_and_mul(dtype, inter):
    gen = torch.Generator().manual_seed(inter)
    x = (torch.randn(9, 2 * inter, generator=gen) * 4).to(DEVICE, dtype)
    want = SiluAndMul().forward_native(x)
    got = silu_and_mul(x)
    assert_close_rel(got, want, dtype)
    if ON_GPU:
        with torch.device(DEVICE):  # the CUDA platform's default kernels: Triton
            assert torch.equal(SiluAndMul()(x), got)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul_scaled_by_a_norm_input(dtype):
    """gate_up of the un-normalised hidden state h (the norm folded into its weight): the kernel
    scales each row by 1 / rms(h) before the activation, as the torch path does."""
    gen = torch.Generator().manual_seed(7)
    x = (torch.randn(9, 2 * 2500, generator=gen) * 4).to(DEVICE, dtype)
    h = (torch.randn(9, 1000, generator=gen) * 3).to(DEVICE, dtype)  # 1000: a masked tail
    inv = torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + 1e-5)
    want = SiluAndMul().forward_native((x.float() * inv).to(dtype))
    got = silu_and_mul(x, h, 1e-5)
    assert_close_rel(got, want, dtype)
    with torch.device(DEVICE):  # the device's default kernels: Triton on a GPU, C++ or torch here
        layer = SiluAndMul()
    if ON_GPU:
        assert torch.equal(layer(x, (h, 1e-5)), got)
    else:
        assert_close_rel(layer(x, (h, 1e-5)), want, dtype)  # the CPU path of the layer


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_rows_by_inv_rms_in_place(dtype):
    """q, k and v as column views of one qkv row block (rows strided): each scaled in place by its
    token's 1 / rms(h), nothing else of the buffer touched."""
    from pagedllm.kernels.triton.norm_scale import scale_rows_by_inv_rms_
    from pagedllm.kernels.reference import scale_rows_by_inv_rms

    gen = torch.Generator().manual_seed(3)
    qkv = (torch.randn(11, 4 * 64 + 2 * 2 * 64 + 8, generator=gen) * 2).to(DEVICE, dtype)
    h = (torch.randn(16, 320, generator=gen) * 3).to(DEVICE, dtype)  # more rows than tokens: padding
    want = qkv.clone()
    q, k, v = want[:, :256].view(11, 4, 64), want[:, 256:384], want[:, 384:512]
    wq, wk, wv = (scale_rows_by_inv_rms(x.cpu(), h.cpu(), 1e-6).to(DEVICE) for x in (q, k, v))
    got = qkv.clone()
    for lo, hi in ((0, 256), (256, 384), (384, 512)):
        view = got[:, lo:hi].view(11, 4, 64) if lo == 0 else got[:, lo:hi]
        assert scale_rows_by_inv_rms_(view, h, 1e-6) is view
    assert_close_rel(got[:, :256].view(11, 4, 64), wq, dtype)
    assert_close_rel(got[:, 256:384], wk, dtype)
    assert_close_rel(got[:, 384:512], wv, dtype)
    assert torch.equal(got[:, 512:], qkv[:, 512:])  # the columns past v are not touched


def test_layers_bind_the_implementation_their_kernels_choose():
    """Each op binds forward once, at construction, to the family the layer kernels name: the CPU
    platform's default never reaches Triton, even under the interpreter; a Triton scope does."""
    from pagedllm.layers.activation import SiluAndMul
    from pagedllm.layers.layer_kernels import LayerKernels, OpImpl, use_layer_kernels
    from pagedllm.layers.norm import RMSNorm
    from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding

    def build() -> tuple[RMSNorm, SiluAndMul, RotaryEmbedding]:
        return (RMSNorm(8, 1e-6, torch.float32), SiluAndMul(),
                RotaryEmbedding(8, 8, 16, RopeConfig(theta=10000.0, rope_type="default", params={})))

    for op in build():
        assert op.forward.__func__ is not type(op).forward_triton  # CPU default: C++ or torch
    with use_layer_kernels(LayerKernels(ops=OpImpl.TRITON, linear_method=None)):  # type: ignore[arg-type]
        for op in build():
            assert op.forward.__func__ is type(op).forward_triton
    with use_layer_kernels(LayerKernels(ops=OpImpl.TORCH, linear_method=None)):  # type: ignore[arg-type]
        for op in build():
            assert op.forward.__func__ is type(op).forward_native
