"""INT4 weight-only GEMM (W4A16) for steps of more than 16 rows: x [M, K] bf16/fp16 times a packed
int4 weight (kernels/quant_reference.py's layout: qweight int32 [K / 8, N], nibble i of row r is
input feature 8 r + i; scales and zeros [K / G, N]). Each K tile of the weight is loaded packed,
unpacked and dequantized in registers, (q - zero) * scale rounded to x's dtype, and fed to the
tensor cores; the products sum in float32. Steps of at most 16 rows take the skinny GEMM, which
dequantizes its tiles with `dequant_int4_tile` too (kernels/triton/skinny_gemm.py); steps large
enough that the GEMM is compute-bound dequantize the whole weight (`dequantize_int4_weight`) for
cuBLAS (layers/int4_linear.py decides)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedllm.kernels.triton.tile_order import grouped_tile


@triton.jit
def load_int4_tile(w_ptr, k0, col0, stride_w, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """The packed words of the weight's rows k0 .. k0 + BLOCK_K, columns col0..: int32 [BLOCK_K / 8, BLOCK_N]."""
    rows = k0 // 8 + tl.arange(0, BLOCK_K // 8)
    cols = col0 + tl.arange(0, BLOCK_N)
    return tl.load(w_ptr + rows.to(tl.int64)[:, None] * stride_w + cols[None, :])


@triton.jit
def dequant_int4_tile(packed, s_ptr, z_ptr, k0, col0, stride_s, GROUP: tl.constexpr, BLOCK_K: tl.constexpr,
                      BLOCK_N: tl.constexpr, dtype: tl.constexpr):
    """[BLOCK_K / 8, BLOCK_N] packed words -> [BLOCK_K, BLOCK_N] of dtype: (q - zero) * scale, with
    the scales and zeros of the group holding rows k0.. (BLOCK_K divides GROUP)."""
    shifts = tl.arange(0, 8) * 4
    q = (packed[:, None, :] >> shifts[None, :, None]) & 0xF
    q = tl.reshape(q, (BLOCK_K, BLOCK_N))
    cols = col0 + tl.arange(0, BLOCK_N)
    g = k0 // GROUP
    s = tl.load(s_ptr + g * stride_s + cols).to(tl.float32)
    z = tl.load(z_ptr + g * stride_s + cols).to(tl.float32)
    return ((q.to(tl.float32) - z[None, :]) * s[None, :]).to(dtype)


@triton.jit
def _int4_gemm_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, stride_x, stride_w, stride_s, stride_o,
                      GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    col0 = pid_n * BLOCK_N
    cols = col0 + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows.to(tl.int64)[:, None] * stride_x + ks[None, :], mask=row_ok[:, None], other=0.0)
        w = dequant_int4_tile(load_int4_tile(w_ptr, k0, col0, stride_w, BLOCK_K, BLOCK_N), s_ptr, z_ptr, k0, col0,
                              stride_s, GROUP, BLOCK_K, BLOCK_N, x_ptr.dtype.element_ty)
        acc = tl.dot(x, w, acc)
    out = out_ptr + rows.to(tl.int64)[:, None] * stride_o + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


def int4_gemm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
              group: int) -> torch.Tensor:
    """x [M, K] (row-contiguous) @ the dequantized weight [K, N] -> [M, N] of x's dtype."""
    m, k = x.shape
    n = qweight.shape[1]
    assert qweight.shape[0] * 8 == k and x.stride(-1) == 1 and scales.shape == zeros.shape
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    block_n = next(b for b in (128, 64, 32, 16, 8) if n % b == 0)
    block_k = next(b for b in (128, 64, 32, 16) if group % b == 0)
    block_m = 64 if m <= 64 else 128
    grid = (triton.cdiv(m, block_m) * (n // block_n),)
    _int4_gemm_kernel[grid](x, qweight, scales, zeros, out, m, n, k, x.stride(0), qweight.stride(0),
                            scales.stride(0), out.stride(0), GROUP=group, BLOCK_M=block_m, BLOCK_N=block_n,
                            BLOCK_K=block_k, GROUP_M=8, num_warps=8 if block_m == 128 else 4, num_stages=3)
    return out


@triton.jit
def _dequantize_kernel(w_ptr, s_ptr, z_ptr, out_ptr, stride_w, stride_s, stride_o,
                       GROUP: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    k0 = tl.program_id(0) * BLOCK_K
    col0 = tl.program_id(1) * BLOCK_N
    w = dequant_int4_tile(load_int4_tile(w_ptr, k0, col0, stride_w, BLOCK_K, BLOCK_N), s_ptr, z_ptr, k0, col0,
                          stride_s, GROUP, BLOCK_K, BLOCK_N, out_ptr.dtype.element_ty)
    rows = k0 + tl.arange(0, BLOCK_K)
    cols = col0 + tl.arange(0, BLOCK_N)
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_o + cols[None, :], w)


def dequantize_int4_weight(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int,
                           dtype: torch.dtype) -> torch.Tensor:
    """The packed weight as a dense [K, N] of `dtype` (quant_reference.dequantize_int4's values,
    rounded once): for steps where a cuBLAS GEMM on it beats dequantizing inside the GEMM."""
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    out = torch.empty(k, n, dtype=dtype, device=qweight.device)
    block_n = next(b for b in (128, 64, 32, 16) if n % b == 0)
    block_k = next(b for b in (64, 32, 16) if group % b == 0)
    _dequantize_kernel[(k // block_k, n // block_n)](qweight, scales, zeros, out, qweight.stride(0), scales.stride(0),
                                                     out.stride(0), GROUP=group, BLOCK_K=block_k, BLOCK_N=block_n,
                                                     num_warps=4)
    return out
