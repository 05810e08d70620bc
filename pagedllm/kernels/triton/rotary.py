"""Neox-style rotary embedding applied in place to q and k in one launch.

Per token, the cos/sin row of its position is read once and used for every q and kv head:

    head = | x1 (rot/2) | x2 (rot/2) | rest (head_size - rot) |
    x1' = x1 * cos - x2 * sin,   x2' = x2 * cos + x1 * sin,   rest untouched

cos/sin come from the layer's float32 cache and are rounded to the activation dtype first, as
the torch path and HF do; the products then run in float32 and round once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotate_heads(x_ptr, row_off, stride_head, cos, sin, num_heads,
                  HEADS_PAD: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr):
    heads = tl.arange(0, HEADS_PAD)[:, None]
    dims = tl.arange(0, HALF_PAD)[None, :]
    mask = (heads < num_heads) & (dims < HALF)
    first = x_ptr + row_off + heads * stride_head + dims
    x1 = tl.load(first, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(first + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(first, (x1 * cos - x2 * sin).to(x_ptr.dtype.element_ty), mask=mask)
    tl.store(first + HALF, (x2 * cos + x1 * sin).to(x_ptr.dtype.element_ty), mask=mask)


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
    pos = tl.load(positions_ptr + token).to(tl.int64)
    dims = tl.arange(0, HALF_PAD)[None, :]
    cs = cos_sin_ptr + pos * stride_cs + dims
    # Round cos/sin to the activation dtype first, as the torch path and HF do.
    cos = tl.load(cs, mask=dims < HALF, other=0.0).to(q_ptr.dtype.element_ty).to(tl.float32)
    sin = tl.load(cs + HALF, mask=dims < HALF, other=0.0).to(q_ptr.dtype.element_ty).to(tl.float32)
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
