"""W8A8 FP8 GEMMs for steps of more than 16 rows (prefill, large decode batches): the activations
quantized per token (or per token and 128-feature group), then one tensor-core GEMM over fp8
operands with the scales applied in float32 (kernels/quant_reference.py holds what they compute).

* `quantize_fp8_rows`: x [M, K] -> fp8 [M, K] and scales [M, groups], one program per (row,
  group), dynamic (amax / 448) or the checkpoint's static scale.
* `fp8_scaled_gemm`: a [M, K] fp8 x b [N, K] fp8 -> [M, N]. Per-channel weights: the products
  sum in float32 and the row and column scales multiply the sum once. Block weights (B x B tiles
  of scales, DeepSeek-V3 / Qwen3-FP8): BLOCK_K is the group, so each K step's product is scaled
  by its row's group scale and its columns' block scales before it is added.

Steps of at most 16 rows stream the fp8 weight through the skinny GEMM instead
(kernels/triton/skinny_gemm.py, weight-only: the activations stay bf16), and per-channel weights
of large steps may take torch._scaled_mm (cuBLASLt / CUTLASS) where the card has it
(layers/fp8_linear.py decides once).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedllm.kernels.quant_reference import FP8_DTYPE, FP8_MAX, MIN_SCALE
from pagedllm.kernels.triton.tile_order import grouped_tile


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, static_ptr, K, stride_x, stride_q, stride_s,
                          GROUP: tl.constexpr, BLOCK: tl.constexpr, STATIC: tl.constexpr,
                          FMAX: tl.constexpr, SMIN: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1)
    lo = g * GROUP
    if STATIC:
        scale = tl.load(static_ptr).to(tl.float32)
    else:
        amax = tl.zeros([BLOCK], tl.float32)
        for c in range(0, GROUP, BLOCK):
            cols = lo + c + tl.arange(0, BLOCK)
            ok = (cols < K) & (c + tl.arange(0, BLOCK) < GROUP)
            x = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        scale = tl.maximum(tl.max(amax, 0) / FMAX, SMIN)
    tl.store(s_ptr + row * stride_s + g, scale)
    for c in range(0, GROUP, BLOCK):
        cols = lo + c + tl.arange(0, BLOCK)
        ok = (cols < K) & (c + tl.arange(0, BLOCK) < GROUP)
        x = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(x / scale, -FMAX), FMAX)
        tl.store(q_ptr + row * stride_q + cols, q.to(q_ptr.dtype.element_ty), mask=ok)


def quantize_fp8_rows(x: torch.Tensor, group: int | None = None,
                      static_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (row-contiguous) -> (fp8 [M, K], float32 scales [M, ceil(K / group)]); group None:
    one scale per row; static_scale: the checkpoint's per-tensor scale ([1] float32), scales
    [M, 1]. As quant_reference.quantize_fp8_rows."""
    m, k = x.shape
    assert x.stride(-1) == 1
    g = k if group is None or static_scale is not None else group
    groups = triton.cdiv(k, g)
    q = torch.empty(m, k, dtype=FP8_DTYPE, device=x.device)
    s = torch.empty(m, groups, dtype=torch.float32, device=x.device)
    if m == 0:
        return q, s
    block = min(1024, triton.next_power_of_2(g))
    _quantize_rows_kernel[(m, groups)](
        x, q, s, static_scale if static_scale is not None else s, k, x.stride(0), q.stride(0), s.stride(0),
        GROUP=g, BLOCK=block, STATIC=static_scale is not None, FMAX=FP8_MAX, SMIN=MIN_SCALE, num_warps=4)
    return q, s


@triton.jit
def _fp8_gemm_kernel(a_ptr, a_s_ptr, b_ptr, b_s_ptr, out_ptr, M, N, K,
                     stride_am, stride_asm, stride_bn, stride_bsn, stride_om,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     BLOCK_SCALES: tl.constexpr, SCALE_BN: tl.constexpr, GROUP_M: tl.constexpr):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    rows64 = rows.to(tl.int64)
    cols64 = cols.to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        ks = kb * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        a = tl.load(a_ptr + rows64[:, None] * stride_am + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + cols64[None, :] * stride_bn + ks[:, None], mask=col_ok[None, :] & k_ok[:, None], other=0.0)
        if BLOCK_SCALES:
            a_s = tl.load(a_s_ptr + rows64 * stride_asm + kb, mask=row_ok, other=0.0)
            b_s = tl.load(b_s_ptr + (cols // SCALE_BN) * stride_bsn + kb, mask=col_ok, other=0.0)
            acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        else:
            acc = tl.dot(a, b, acc)
    if not BLOCK_SCALES:
        a_s = tl.load(a_s_ptr + rows64 * stride_asm, mask=row_ok, other=0.0)
        b_s = tl.load(b_s_ptr + cols, mask=col_ok, other=0.0)
        acc = acc * a_s[:, None] * b_s[None, :]
    out = out_ptr + rows64[:, None] * stride_om + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def fp8_scaled_gemm(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
                    block: tuple[int, int] | None, out_dtype: torch.dtype) -> torch.Tensor:
    """a fp8 [M, K] with scales [M, 1] (per-channel b) or [M, ceil(K / bk)] (block b), b fp8 [N, K]
    with scales [N] or [ceil(N / bn), ceil(K / bk)] -> [M, N] of out_dtype. As
    quant_reference.fp8_scaled_mm."""
    m, k = a.shape
    n = b.shape[0]
    assert b.shape[1] == k and a.stride(-1) == 1 and b.stride(-1) == 1
    out = torch.empty(m, n, dtype=out_dtype, device=a.device)
    if m == 0:
        return out
    if block is not None:
        scale_bn, block_k = block
        assert a_scale.shape[1] == triton.cdiv(k, block_k) and scale_bn >= 16
        block_n = min(128, scale_bn)
    else:
        scale_bn, block_k, block_n = 1, 128, 128
    block_m = 64 if m <= 64 else 128
    grid = (triton.cdiv(m, block_m) * triton.cdiv(n, block_n),)
    _fp8_gemm_kernel[grid](
        a, a_scale, b, b_scale, out, m, n, k, a.stride(0), a_scale.stride(0), b.stride(0),
        b_scale.stride(0) if block is not None else 0, out.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_SCALES=block is not None,
        SCALE_BN=scale_bn, GROUP_M=8, num_warps=8 if block_m == 128 else 4, num_stages=3)
    return out
