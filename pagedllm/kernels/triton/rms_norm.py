"""Fused RMSNorm, optionally with the residual add: one pass over each row instead of four ops.

Rounds exactly where the torch path (layers/norm.py, like HF's LlamaRMSNorm) does, so bf16/fp16
results match it: sum = round(x + residual); y = round(sum * rsqrt(mean(sum^2) + eps)) in
float32; out = round(weight * y).

x may also be the float32 split-K partial products of the linear layer before the norm, [S, T, H]:
the kernel adds them up and rounds to the residual's dtype (what the linear layer's own output
would have been) before the residual add. That folds the GEMM's reduce into the norm's launch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedllm.kernels.triton.l2_prefetch import L2Prefetch, issue_l2_prefetch, launch_args


@triton.jit
def _rms_norm_kernel(
    out_ptr, residual_out_ptr,  # [T, H] each; residual_out only with HAS_RESIDUAL
    x_ptr, residual_ptr, weight_ptr,  # [T, H] (or [NUM_PARTS, T, H] float32 partials), [T, H], [H]
    stride_x, stride_r, stride_out, stride_rout, stride_part, eps,
    prefetch_address, prefetch_bytes,  # the next GEMM's weight (PREFETCH only)
    HIDDEN: tl.constexpr, BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NUM_PARTS: tl.constexpr,
    PREFETCH: tl.constexpr, LANES: tl.constexpr,
):
    if PREFETCH:
        issue_l2_prefetch(prefetch_address, prefetch_bytes, tl.program_id(0), tl.num_programs(0), LANES)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < HIDDEN
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if NUM_PARTS > 1:  # float32 partials: their sum rounded as the linear layer's output would be
        for part in tl.static_range(1, NUM_PARTS):
            x += tl.load(x_ptr + part * stride_part + row * stride_x + cols, mask=mask, other=0.0)
        x = x.to(residual_ptr.dtype.element_ty)
    if HAS_RESIDUAL:
        r = tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(residual_ptr.dtype.element_ty)  # rounds like torch's add
        tl.store(residual_out_ptr + row * stride_rout + cols, x, mask=mask)
    xf = x.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(xf * xf, 0) / HIDDEN + eps)
    y = (xf * inv_rms).to(x.dtype)
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0)
    out = (w.to(tl.float32) * y.to(tl.float32)).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + row * stride_out + cols, out, mask=mask)


def rms_norm(
    x: torch.Tensor,  # [T, H], or [S, T, H] float32 split-K partials (then residual is required)
    weight: torch.Tensor,  # [H]
    eps: float,
    residual: torch.Tensor | None = None,  # [T, H]
    prefetch: L2Prefetch | None = None,  # the next GEMM's weight, asked into L2 (at most MAX_ROWS rows)
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(norm(x + residual) * weight, x + residual), or (norm(x) * weight, None); new tensors,
    inputs untouched. With partials, x stands for x.sum(0) rounded to residual's dtype."""
    assert x.stride(-1) == 1 and (residual is None or residual.stride(-1) == 1)
    partials = x if x.dim() == 3 else x.unsqueeze(0)
    assert partials.dim() == 3 and (x.dim() == 2 or (residual is not None and x.dtype == torch.float32))
    num_parts, num_rows, hidden = partials.shape
    value_dtype = residual.dtype if residual is not None else x.dtype
    out_dtype = torch.promote_types(weight.dtype, value_dtype)
    out = torch.empty(num_rows, hidden, dtype=out_dtype, device=x.device)
    residual_out = torch.empty_like(residual) if residual is not None else None
    if num_rows == 0:
        return out, residual_out
    block = triton.next_power_of_2(hidden)
    num_warps = min(16, max(1, block // 256))
    prefetch_address, prefetch_bytes, do_prefetch = launch_args(prefetch, num_rows)
    _rms_norm_kernel[(num_rows,)](
        out, residual_out if residual_out is not None else out,
        x, residual if residual is not None else x, weight,
        partials.stride(1), residual.stride(0) if residual is not None else 0, out.stride(0),
        residual_out.stride(0) if residual_out is not None else 0, partials.stride(0), eps,
        prefetch_address, prefetch_bytes,
        HIDDEN=hidden, BLOCK=block, HAS_RESIDUAL=residual is not None, NUM_PARTS=num_parts,
        PREFETCH=do_prefetch, LANES=32 * num_warps, num_warps=num_warps,
    )
    return out, residual_out
