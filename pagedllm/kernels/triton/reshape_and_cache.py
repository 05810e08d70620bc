"""Write this step's K/V into the paged cache through the slot mapping.

One program per token copies that token's K and V rows (all kv heads) to its slot:

    slot = block_id * block_size + offset  ->  cache[0 or 1, block_id, offset, :, :]

Slots < 0 are skipped: padded tokens of a captured CUDA graph carry slot -1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedllm.kernels.triton.cache_store import to_cache


@triton.jit
def _reshape_and_cache_kernel(
    key_ptr, value_ptr,  # [num_tokens, num_kv_heads, head_size], rows may be strided
    k_cache_ptr, v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_size]
    slot_ptr,  # [num_tokens] int64
    stride_k_tok, stride_k_head, stride_v_tok, stride_v_head,
    stride_c_block, stride_c_tok, stride_c_head,
    k_inv, v_inv,  # 1 / the fp8 cache's K and V scales (1.0: none)
    BLOCK_SIZE: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_SIZE: tl.constexpr,
    HEADS_PAD: tl.constexpr, HEAD_PAD: tl.constexpr, SCALED: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot < 0:
        return
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    heads = tl.arange(0, HEADS_PAD)[:, None]
    dims = tl.arange(0, HEAD_PAD)[None, :]
    mask = (heads < NUM_KV_HEADS) & (dims < HEAD_SIZE)
    src_k = key_ptr + token.to(tl.int64) * stride_k_tok + heads * stride_k_head + dims
    src_v = value_ptr + token.to(tl.int64) * stride_v_tok + heads * stride_v_head + dims
    dst = block * stride_c_block + offset * stride_c_tok + heads * stride_c_head + dims
    k = tl.load(src_k, mask=mask)
    v = tl.load(src_v, mask=mask)
    if SCALED:
        k = k.to(tl.float32) * k_inv
        v = v.to(tl.float32) * v_inv
    tl.store(k_cache_ptr + dst, to_cache(k, k_cache_ptr), mask=mask)
    tl.store(v_cache_ptr + dst, to_cache(v, v_cache_ptr), mask=mask)


def reshape_and_cache(
    key: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
    value: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_size]
    slot_mapping: torch.Tensor,  # [>= num_tokens] int64; < 0 means skip
    num_tokens: int,
    kv_scales: tuple[float, float] = (1.0, 1.0),
) -> None:
    """Store the first `num_tokens` tokens' K/V at their slots (no host sync: the grid is the
    host-known token count); an fp8 cache's scales (k_scale, v_scale) divide them first."""
    if num_tokens == 0:
        return
    _, _, block_size, kv_heads, head_size = kv_cache.shape
    assert key.stride(-1) == 1 and value.stride(-1) == 1, "head dim must be contiguous"
    assert kv_cache.stride(-1) == 1 and kv_cache[0].stride() == kv_cache[1].stride()
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    _reshape_and_cache_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), 1.0 / kv_scales[0], 1.0 / kv_scales[1],
        BLOCK_SIZE=block_size, NUM_KV_HEADS=kv_heads, HEAD_SIZE=head_size,
        HEADS_PAD=triton.next_power_of_2(kv_heads), HEAD_PAD=triton.next_power_of_2(head_size),
        SCALED=kv_scales != (1.0, 1.0),
        num_warps=4,
    )
