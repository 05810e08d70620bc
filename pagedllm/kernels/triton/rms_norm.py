"""Fused RMSNorm, optionally with the residual add: one pass over each row instead of four ops.

Rounds exactly where the torch path (layers/norm.py, like HF's LlamaRMSNorm) does, so bf16/fp16
results match it: sum = round(x + residual); y = round(sum * rsqrt(mean(sum^2) + eps)) in
float32; out = round(weight * y).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(
    out_ptr, residual_out_ptr,  # [T, H] each; residual_out only with HAS_RESIDUAL
    x_ptr, residual_ptr, weight_ptr,  # [T, H], [T, H], [H]
    stride_x, stride_r, stride_out, stride_rout, eps,
    HIDDEN: tl.constexpr, BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < HIDDEN
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)  # rounds like torch's add
        tl.store(residual_out_ptr + row * stride_rout + cols, x, mask=mask)
    xf = x.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(xf * xf, 0) / HIDDEN + eps)
    y = (xf * inv_rms).to(x_ptr.dtype.element_ty)
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0)
    out = (w.to(tl.float32) * y.to(tl.float32)).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + row * stride_out + cols, out, mask=mask)


def rms_norm(
    x: torch.Tensor,  # [T, H], last dim contiguous
    weight: torch.Tensor,  # [H]
    eps: float,
    residual: torch.Tensor | None = None,  # [T, H]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(norm(x + residual) * weight, x + residual), or (norm(x) * weight, None); new tensors,
    inputs untouched."""
    assert x.dim() == 2 and x.stride(-1) == 1 and (residual is None or residual.stride(-1) == 1)
    num_rows, hidden = x.shape
    out_dtype = torch.promote_types(weight.dtype, x.dtype)
    out = torch.empty(num_rows, hidden, dtype=out_dtype, device=x.device)
    residual_out = torch.empty_like(x) if residual is not None else None
    if num_rows == 0:
        return out, residual_out
    block = triton.next_power_of_2(hidden)
    _rms_norm_kernel[(num_rows,)](
        out, residual_out if residual_out is not None else out,
        x, residual if residual is not None else x, weight,
        x.stride(0), residual.stride(0) if residual is not None else 0, out.stride(0),
        residual_out.stride(0) if residual_out is not None else 0, eps,
        HIDDEN=hidden, BLOCK=block, HAS_RESIDUAL=residual is not None,
        num_warps=min(16, max(1, block // 256)),
    )
    return out, residual_out
