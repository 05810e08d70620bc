"""Rows multiplied in place by 1 / rms of another tensor's rows: an RMSNorm's scale, applied
after a linear map instead of before.

A model that folds an RMSNorm's weight into the next projection (models/norm_folding.py) runs
that projection on the un-normalised hidden state h: h W' = rms(h) * (norm(h) W). The consumer of
the projection's output multiplies each row by 1 / rms(h) to get what the unfolded model computes.
The fused consumers (the decode attention kernel, SiLU-and-mul) do it in registers; this kernel
is for the other paths (steps with prompt tokens): one launch for a step's q, k and v when they
are one qkv output's column ranges.

Rounds like a materialised tensor would: the product is taken in float32 and rounded once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedllm.kernels.qkv_layout import merged_qkv_rows


@triton.jit
def _scale_rows_kernel(
    x_ptr, src_ptr,  # [T, W] (rows strided, last dim contiguous), [T, H]
    stride_x, stride_src, width, eps,
    HIDDEN: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    hcols = tl.arange(0, BLOCK_H)
    h = tl.load(src_ptr + row * stride_src + hcols, mask=hcols < HIDDEN, other=0.0).to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(h * h, 0) / HIDDEN + eps)
    for start in range(0, width, BLOCK_W):
        cols = start + tl.arange(0, BLOCK_W)
        mask = cols < width
        ptrs = x_ptr + row * stride_x + cols
        x = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(ptrs, (x * inv_rms).to(x_ptr.dtype.element_ty), mask=mask)


def scale_rows_by_inv_rms_(x: torch.Tensor, source: torch.Tensor, eps: float) -> torch.Tensor:
    """x[t] *= 1 / sqrt(mean(source[t]^2) + eps) for each of x's rows, in place; returns x.
    x: [T, ...] whose trailing dims are contiguous within a row; source: [>= T, H]."""
    num_rows = x.shape[0]
    flat = x.view(num_rows, -1) if x.dim() != 2 else x
    assert flat.stride(-1) == 1 and source.dim() == 2 and source.stride(-1) == 1 and source.shape[0] >= num_rows
    if num_rows == 0:
        return x
    hidden, width = source.shape[1], flat.shape[1]
    _scale_rows_kernel[(num_rows,)](
        flat, source, flat.stride(0), source.stride(0), width, eps,
        HIDDEN=hidden, BLOCK_H=triton.next_power_of_2(hidden), BLOCK_W=min(4096, triton.next_power_of_2(width)),
        num_warps=4,
    )
    return x


def scale_qkv_by_inv_rms_(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          source: torch.Tensor, eps: float) -> None:
    """q, k, v ([T, heads, head_size] each) scaled in place by their token's 1 / rms(source)."""
    merged = merged_qkv_rows(query, key, value)  # one launch, source read once per token
    for x in (query, key, value) if merged is None else (merged,):
        scale_rows_by_inv_rms_(x, source, eps)
