"""SiLU-and-mul for merged gate_up projections: out = silu(gate) * up, one pass instead of three
ops (the chunk views, silu, mul) and no float32 temporaries.

Rounds where the torch path does: silu(gate) in float32 rounded to the dtype, then the product
rounded once more.

With `norm_input` (a model whose post-attention RMSNorm weight is folded into gate_up's weight,
so gate_up ran on the un-normalised residual), each row's gate and up are first multiplied by
that row's 1 / rms(norm_input) and rounded: the norm's scale, applied after the linear map
instead of before (kernels/triton/norm_scale.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _silu_and_mul_kernel(
    out_ptr, x_ptr, norm_ptr,  # [T, I], [T, 2I]: | gate | up |, [T, H] (SCALED only)
    stride_out, stride_x, stride_norm, inter, num_col_blocks, eps,
    BLOCK: tl.constexpr, SCALED: tl.constexpr, HIDDEN: tl.constexpr, BLOCK_H: tl.constexpr,
):
    # A row's column blocks are consecutive programs, so the SCALED re-reads of its norm_input
    # row come from L2 while it is still there.
    pid = tl.program_id(0)
    row = (pid // num_col_blocks).to(tl.int64)
    cols = (pid % num_col_blocks) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + inter + cols, mask=mask, other=0.0).to(tl.float32)
    if SCALED:
        hcols = tl.arange(0, BLOCK_H)
        h = tl.load(norm_ptr + row * stride_norm + hcols, mask=hcols < HIDDEN, other=0.0).to(tl.float32)
        inv_rms = tl.rsqrt(tl.sum(h * h, 0) / HIDDEN + eps)
        # Rounded as the scaled gate_up output would be if it were materialised (the torch path).
        gate = (gate * inv_rms).to(x_ptr.dtype.element_ty).to(tl.float32)
        up = (up * inv_rms).to(x_ptr.dtype.element_ty).to(tl.float32)
    silu = (gate / (1.0 + tl.exp(-gate))).to(x_ptr.dtype.element_ty)
    out = silu.to(tl.float32) * up
    tl.store(out_ptr + row * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(
    x: torch.Tensor,  # [T, 2I]
    norm_input: torch.Tensor | None = None,  # [T, H]: scale each row by 1 / rms(its norm_input row)
    eps: float = 0.0,
) -> torch.Tensor:  # [T, I]
    assert x.dim() == 2 and x.stride(-1) == 1 and x.shape[1] % 2 == 0
    num_rows, inter = x.shape[0], x.shape[1] // 2
    out = torch.empty(num_rows, inter, dtype=x.dtype, device=x.device)
    if num_rows == 0:
        return out
    scaled = norm_input is not None
    norm, hidden, stride_norm = x, 1, 0  # unscaled: the kernel never reads norm
    if norm_input is not None:
        assert norm_input.dim() == 2 and norm_input.shape[0] >= num_rows and norm_input.stride(-1) == 1
        norm, hidden, stride_norm = norm_input, norm_input.shape[1], norm_input.stride(0)
    block = min(2048, triton.next_power_of_2(inter))
    col_blocks = triton.cdiv(inter, block)
    _silu_and_mul_kernel[(num_rows * col_blocks,)](
        out, x, norm, out.stride(0), x.stride(0), stride_norm, inter, col_blocks, eps,
        BLOCK=block, SCALED=scaled, HIDDEN=hidden, BLOCK_H=triton.next_power_of_2(hidden), num_warps=4,
    )
    return out
