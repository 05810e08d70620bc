"""Neox-style rotary embedding applied in place to q and k in one launch.

Per token, the cos/sin row of its position is read once and used for every q and kv head:

    head = | x1 (rot/2) | x2 (rot/2) | rest (head_size - rot) |
    x1' = x1 * cos - x2 * sin,   x2' = x2 * cos + x1 * sin,   rest untouched

cos/sin come from the layer's float32 cache and are rounded to the activation dtype first, as
the torch path and HF do; the products then run in float32 and round once.

`rotary_embedding_and_cache_` also writes the step's K/V into the paged cache (what
reshape_and_cache does) in the same launch: the attention backend calls it in place of the
layer's rotary and its own cache write, one launch per layer fewer.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedllm.kernels.triton.cache_store import to_cache


@triton.jit
def _rotate_heads(x_ptr, row_off, stride_head, cos, sin, num_heads,
                  HEADS_PAD: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
                  norm_w_ptr=None, eps=0.0, NORM: tl.constexpr = False):
    heads = tl.arange(0, HEADS_PAD)[:, None]
    dims = tl.arange(0, HALF_PAD)[None, :]
    mask = (heads < num_heads) & (dims < HALF)
    first = x_ptr + row_off + heads * stride_head + dims
    x1 = tl.load(first, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(first + HALF, mask=mask, other=0.0).to(tl.float32)
    if NORM:
        # Qwen3's per-head RMSNorm before the rotation (full rotary only: the head is x1 | x2), in
        # the torch path's order: normalise in float32, round, scale by the weight, round.
        inv = tl.rsqrt((tl.sum(x1 * x1, 1) + tl.sum(x2 * x2, 1)) / (2 * HALF) + eps)[:, None]
        # (A product of two values of the dtype, taken in float32 and rounded, is exactly torch's.)
        w1 = tl.load(norm_w_ptr + dims, mask=dims < HALF, other=0.0).to(tl.float32)
        w2 = tl.load(norm_w_ptr + HALF + dims, mask=dims < HALF, other=0.0).to(tl.float32)
        dtype = x_ptr.dtype.element_ty
        x1 = (w1 * (x1 * inv).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
        x2 = (w2 * (x2 * inv).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    r1 = (x1 * cos - x2 * sin).to(x_ptr.dtype.element_ty)
    r2 = (x2 * cos + x1 * sin).to(x_ptr.dtype.element_ty)
    tl.store(first, r1, mask=mask)
    tl.store(first + HALF, r2, mask=mask)
    return r1, r2  # [HEADS_PAD, HALF_PAD] each, for a caller that also stores them elsewhere


@triton.jit
def _cos_sin(cos_sin_ptr, positions_ptr, token, stride_cs, x_ptr, HALF: tl.constexpr, HALF_PAD: tl.constexpr):
    """The token's cos and sin rows [1, HALF_PAD] in float32, rounded first to the dtype of the
    activations at x_ptr, as the torch path and HF do."""
    pos = tl.load(positions_ptr + token).to(tl.int64)
    dims = tl.arange(0, HALF_PAD)[None, :]
    cs = cos_sin_ptr + pos * stride_cs + dims
    cos = tl.load(cs, mask=dims < HALF, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    sin = tl.load(cs + HALF, mask=dims < HALF, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    return cos, sin


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr,  # [T, num_heads * head_size], [T, num_kv_heads * head_size]; rows may be strided
    positions_ptr,  # [T] int64
    cos_sin_ptr,  # [max_position, rot]: | cos (rot/2) | sin (rot/2) | float32
    stride_q, stride_k, stride_cs, num_heads, num_kv_heads,
    HEAD_SIZE: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
    Q_HEADS_PAD: tl.constexpr, K_HEADS_PAD: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    cos, sin = _cos_sin(cos_sin_ptr, positions_ptr, token, stride_cs, q_ptr, HALF, HALF_PAD)
    _rotate_heads(q_ptr, token * stride_q, HEAD_SIZE, cos, sin, num_heads, Q_HEADS_PAD, HALF, HALF_PAD)
    _rotate_heads(k_ptr, token * stride_k, HEAD_SIZE, cos, sin, num_kv_heads, K_HEADS_PAD, HALF, HALF_PAD)


def rotary_embedding_(
    positions: torch.Tensor,  # [T] int
    query: torch.Tensor,  # [T, num_heads * head_size], last dim contiguous
    key: torch.Tensor,  # [T, num_kv_heads * head_size], last dim contiguous
    cos_sin_cache: torch.Tensor,  # [max_position, rotary_dim] float32
    head_size: int,
) -> None:
    """Rotate q and k in place (they may be views into one fused qkv tensor)."""
    num_tokens = query.shape[0]
    if num_tokens == 0:
        return
    assert query.stride(-1) == 1 and key.stride(-1) == 1 and cos_sin_cache.stride(-1) == 1
    assert query.dtype == key.dtype
    rotary_dim = cos_sin_cache.shape[-1]
    num_heads, num_kv_heads = query.shape[1] // head_size, key.shape[1] // head_size
    half = rotary_dim // 2
    _rotary_kernel[(num_tokens,)](
        query, key, positions, cos_sin_cache,
        query.stride(0), key.stride(0), cos_sin_cache.stride(0), num_heads, num_kv_heads,
        HEAD_SIZE=head_size, HALF=half, HALF_PAD=triton.next_power_of_2(half),
        Q_HEADS_PAD=triton.next_power_of_2(num_heads), K_HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        num_warps=4,
    )


@triton.jit
def _rotary_and_cache_kernel(
    q_ptr, k_ptr, v_ptr,  # [T, num_heads * head_size], [T, num_kv_heads * head_size] x 2; rows may be strided
    positions_ptr,  # [T] int64
    cos_sin_ptr,  # [max_position, rot] float32
    k_cache_ptr, v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_size]
    slot_ptr,  # [T] int64; < 0: no cache write
    q_norm_ptr, k_norm_ptr,  # [head_size] each (QK_NORM only)
    num_actual, stride_q, stride_k, stride_v, stride_cs, stride_c_block, stride_c_tok, stride_c_head, num_heads, eps,
    k_inv, v_inv,  # 1 / the fp8 cache's K and V scales (SCALED)
    HEAD_SIZE: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr, REST: tl.constexpr, REST_PAD: tl.constexpr,
    HEAD_PAD: tl.constexpr, Q_HEADS_PAD: tl.constexpr, NUM_KV_HEADS: tl.constexpr, K_HEADS_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, QK_NORM: tl.constexpr, SCALED: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    cos, sin = _cos_sin(cos_sin_ptr, positions_ptr, token, stride_cs, q_ptr, HALF, HALF_PAD)
    dims = tl.arange(0, HALF_PAD)[None, :]
    _rotate_heads(q_ptr, token * stride_q, HEAD_SIZE, cos, sin, num_heads, Q_HEADS_PAD, HALF, HALF_PAD,
                  q_norm_ptr, eps, QK_NORM)
    # k: rotated in place, and the rotated values (still in registers) go to the token's cache slot.
    r1, r2 = _rotate_heads(k_ptr, token * stride_k, HEAD_SIZE, cos, sin, NUM_KV_HEADS, K_HEADS_PAD, HALF, HALF_PAD,
                           k_norm_ptr, eps, QK_NORM)
    heads = tl.arange(0, K_HEADS_PAD)[:, None]
    mask = (heads < NUM_KV_HEADS) & (dims < HALF)
    slot = tl.load(slot_ptr + token)
    if (token < num_actual) & (slot >= 0):
        cache_row = (slot // BLOCK_SIZE) * stride_c_block + (slot % BLOCK_SIZE) * stride_c_tok + heads * stride_c_head
        if SCALED:
            r1 = r1.to(tl.float32) * k_inv
            r2 = r2.to(tl.float32) * k_inv
        tl.store(k_cache_ptr + cache_row + dims, to_cache(r1, k_cache_ptr), mask=mask)
        tl.store(k_cache_ptr + cache_row + HALF + dims, to_cache(r2, k_cache_ptr), mask=mask)
        if REST > 0:  # partial rotary: the dims past the rotated ones are copied as they are
            rest = tl.arange(0, REST_PAD)[None, :]
            rest_mask = (heads < NUM_KV_HEADS) & (rest < REST)
            tail = tl.load(k_ptr + token * stride_k + heads * HEAD_SIZE + 2 * HALF + rest, mask=rest_mask)
            if SCALED:
                tail = tail.to(tl.float32) * k_inv
            tl.store(k_cache_ptr + cache_row + 2 * HALF + rest, to_cache(tail, k_cache_ptr),
                     mask=rest_mask)
        full = tl.arange(0, HEAD_PAD)[None, :]
        v_mask = (heads < NUM_KV_HEADS) & (full < HEAD_SIZE)
        v = tl.load(v_ptr + token * stride_v + heads * HEAD_SIZE + full, mask=v_mask)
        if SCALED:
            v = v.to(tl.float32) * v_inv
        tl.store(v_cache_ptr + cache_row + full, to_cache(v, v_cache_ptr), mask=v_mask)


def rotary_embedding_and_cache_(
    positions: torch.Tensor,  # [T] int
    query: torch.Tensor,  # [T, num_heads * head_size], last dim contiguous
    key: torch.Tensor,  # [T, num_kv_heads * head_size], last dim contiguous
    value: torch.Tensor,  # [T, num_kv_heads * head_size], last dim contiguous
    cos_sin_cache: torch.Tensor,  # [max_position, rotary_dim] float32
    head_size: int,
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_size]
    slot_mapping: torch.Tensor,  # [>= num_actual] int64; < 0: skip
    num_actual: int,
    qk_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,  # (q weight [head_size], k weight, eps)
    kv_scales: tuple[float, float] = (1.0, 1.0),
) -> None:
    """rotary_embedding_ on q and k, then reshape_and_cache of the first num_actual tokens' k and v,
    in one launch: the rotated k goes to its cache slot from registers. With `qk_norm` (Qwen3), each
    head of q and k is RMS-normalised first, in the same launch (full rotary only). An fp8 cache's
    scales (k_scale, v_scale) divide what is stored."""
    num_tokens = query.shape[0]
    if num_tokens == 0:
        return
    assert query.stride(-1) == key.stride(-1) == value.stride(-1) == cos_sin_cache.stride(-1) == 1
    assert query.dtype == key.dtype and kv_cache.stride(-1) == 1 and kv_cache[0].stride() == kv_cache[1].stride()
    _, _, block_size, num_kv_heads, cache_head_size = kv_cache.shape
    assert cache_head_size == head_size and key.shape[1] == num_kv_heads * head_size
    half = cos_sin_cache.shape[-1] // 2
    rest = head_size - 2 * half
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    q_norm, k_norm, eps = qk_norm if qk_norm is not None else (query, key, 0.0)  # unused without QK_NORM
    assert qk_norm is None or (rest == 0 and q_norm.numel() == k_norm.numel() == head_size)
    _rotary_and_cache_kernel[(num_tokens,)](
        query, key, value, positions, cos_sin_cache, k_cache, v_cache, slot_mapping, q_norm, k_norm,
        num_actual, query.stride(0), key.stride(0), value.stride(0), cos_sin_cache.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), query.shape[1] // head_size, eps,
        1.0 / kv_scales[0], 1.0 / kv_scales[1],
        HEAD_SIZE=head_size, HALF=half, HALF_PAD=triton.next_power_of_2(half), REST=rest,
        REST_PAD=triton.next_power_of_2(max(rest, 1)), HEAD_PAD=triton.next_power_of_2(head_size),
        Q_HEADS_PAD=triton.next_power_of_2(query.shape[1] // head_size), NUM_KV_HEADS=num_kv_heads,
        K_HEADS_PAD=triton.next_power_of_2(num_kv_heads), BLOCK_SIZE=block_size, QK_NORM=qk_norm is not None,
        SCALED=kv_scales != (1.0, 1.0), num_warps=4,
    )
