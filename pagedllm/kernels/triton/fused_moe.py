"""Mixture-of-experts on the GPU without a host sync (CUDA-graph safe): the routed (token, slot)
pairs sorted by expert and padded per expert to the tile height, then one grouped GEMM launch for
all experts' gate_up and one for their down projections (layers/moe_method.py has the math and the
torch reference these are tested against).

    align_by_expert(topk_ids [T, k]) ->
        sorted_ids      [P] int32: flat (token * k + slot) ids grouped by expert, each group padded
                        with T*k (no row) to a multiple of BLOCK_M; P = T*k + E*(BLOCK_M-1) rounded
                        up to BLOCK_M, a bound known without reading the routing
        block_expert    [P / BLOCK_M] int32: the expert of each tile of rows (E past the last group)

    moe_gemm: C[id] = A[id // k or id] @ W[expert]^T (* topk_weight[id]) for the rows of each tile

With gate_up in [T*k, 2I], SiLU-and-mul, then down (the routing weight applied in its epilogue)
in [T*k, H], each token's k rows are summed: out [T, H].
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from pagedllm.kernels.triton.int4_gemm import dequant_int4_tile, load_int4_tile

# Routed rows up to which one program aligns them (decode steps of up to 8 requests at top-8): all in
# registers at once, a few instructions instead of a dozen torch launches; more rows take the torch
# ops, whose fixed launches are small against such a step's GEMMs.
ALIGN_KERNEL_MAX_ROWS = 64


@triton.jit
def _align_kernel(ids_ptr, sorted_ids_ptr, block_expert_ptr, num_rows, num_experts, size, num_blocks,
                  BLOCK_M: tl.constexpr, ROWS_P: tl.constexpr, E_P: tl.constexpr, NB_P: tl.constexpr,
                  FILL: tl.constexpr):
    """One program: each routed row placed in its expert's group (rows of an expert in increasing
    id, as the stable sort gives them), groups padded to BLOCK_M, each tile's expert."""
    rows = tl.arange(0, ROWS_P)
    row_in = rows < num_rows
    ids = tl.load(ids_ptr + rows, mask=row_in, other=num_experts)
    e = tl.arange(0, E_P)
    expert_in = e < num_experts
    counts = tl.sum((ids[None, :] == e[:, None]).to(tl.int32), axis=1)
    counts = tl.where(expert_in, counts, 0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, 0)
    starts = ends - padded
    earlier_same = (ids[:, None] == ids[None, :]) & (rows[None, :] < rows[:, None])
    rank = tl.sum(earlier_same.to(tl.int32), axis=1)
    row_start = tl.sum(tl.where(e[None, :] == ids[:, None], starts[None, :], 0), axis=1)
    fill = tl.arange(0, FILL)
    for first in range(0, size, FILL):
        tl.store(sorted_ids_ptr + first + fill, num_rows, mask=first + fill < size)
    tl.debug_barrier()
    tl.store(sorted_ids_ptr + row_start + rank, rows, mask=row_in)
    blocks = tl.arange(0, NB_P)
    # a tile's expert: the number of groups that end at or before its first row (num_experts past them)
    before = (ends[None, :] <= (blocks * BLOCK_M)[:, None]) & expert_in[None, :]
    tl.store(block_expert_ptr + blocks, tl.sum(before.to(tl.int32), axis=1), mask=blocks < num_blocks)


def align_by_expert(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted_ids [P], block_expert [P / block_m]); see the module. One program for up to
    ALIGN_KERNEL_MAX_ROWS rows, else torch ops; static shapes and no host sync either way."""
    num = topk_ids.numel()
    if 0 < num <= ALIGN_KERNEL_MAX_ROWS:
        size = triton.cdiv(num + num_experts * (block_m - 1), block_m) * block_m
        sorted_ids = torch.empty(size, dtype=torch.int32, device=topk_ids.device)
        block_expert = torch.empty(size // block_m, dtype=torch.int32, device=topk_ids.device)
        num_blocks = size // block_m
        _align_kernel[(1,)](topk_ids.reshape(-1), sorted_ids, block_expert, num, num_experts, size, num_blocks,
                            BLOCK_M=block_m, ROWS_P=triton.next_power_of_2(num),
                            E_P=triton.next_power_of_2(num_experts), NB_P=triton.next_power_of_2(num_blocks),
                            FILL=1024, num_warps=4)
        return sorted_ids, block_expert
    return align_by_expert_torch(topk_ids, num_experts, block_m)


def align_by_expert_torch(topk_ids: torch.Tensor, num_experts: int,
                          block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """align_by_expert in torch ops of static shapes (the reference the kernel is tested against)."""
    flat = topk_ids.reshape(-1)
    num = flat.numel()
    device = flat.device
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = torch.cumsum(padded, 0)
    order = torch.argsort(flat, stable=True)
    experts = flat[order]
    rank = torch.arange(num, device=device) - (torch.cumsum(counts, 0) - counts)[experts]
    size = triton.cdiv(num + num_experts * (block_m - 1), block_m) * block_m
    sorted_ids = torch.full((size,), num, dtype=torch.int32, device=device)
    sorted_ids[(padded_end - padded)[experts] + rank] = order.to(torch.int32)
    starts = torch.arange(0, size, block_m, device=device)
    block_expert = torch.searchsorted(padded_end, starts, right=True).to(torch.int32)
    return sorted_ids, block_expert


@triton.jit
def _moe_gemm_kernel(
    a_ptr, w_ptr, c_ptr, weights_ptr, sorted_ids_ptr, block_expert_ptr,
    s_ptr,  # fp8 weights' scales: [E, N] (W_SCALE 1) or [E, N / SCALE_N, K / SCALE_K] (W_SCALE 2);
    # int4 weights' (W_SCALE 3; w [E, K / 8, N] packed): [E, K / SCALE_K, N]
    z_ptr,  # int4 weights' zeros, as their scales
    N, K, num_rows, top_k, num_experts,
    stride_am, stride_we, stride_wn, stride_cm, stride_se, stride_sn,
    A_PER_TOKEN: tl.constexpr, MUL_WEIGHT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    W_SCALE: tl.constexpr, SCALE_N: tl.constexpr, SCALE_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert >= num_experts:  # a tile past the last expert's rows
        return
    ids = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = ids < num_rows
    a_rows = (ids // top_k if A_PER_TOKEN else ids).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :]
    w_ptrs = w_ptr + expert.to(tl.int64) * stride_we + offs_n[None, :] * stride_wn + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    n_ok = offs_n < N
    s_expert = s_ptr + expert.to(tl.int64) * stride_se
    for k0 in range(0, K, BLOCK_K):
        k_in = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=valid[:, None] & k_in[None, :], other=0.0)
        if W_SCALE == 3:  # int4, packed along K (K and N tile exactly): unpacked and dequantized here
            packed = load_int4_tile(w_ptr + expert.to(tl.int64) * stride_we, k0, pid_n * BLOCK_N, stride_wn,
                                    BLOCK_K, BLOCK_N)
            w = dequant_int4_tile(packed, s_expert, z_ptr + expert.to(tl.int64) * stride_se, k0, pid_n * BLOCK_N,
                                  stride_sn, SCALE_K, BLOCK_K, BLOCK_N, a.dtype)
            acc += tl.dot(a, w, input_precision=PRECISION)
        elif W_SCALE == 2:  # fp8 with block scales: this K block's, one per column block (BLOCK_K divides SCALE_K)
            w = tl.load(w_ptrs, mask=k_in[:, None] & n_ok[None, :], other=0.0)
            s = tl.load(s_expert + (offs_n // SCALE_N) * stride_sn + k0 // SCALE_K, mask=n_ok, other=0.0)
            acc += tl.dot(a, w.to(a.dtype), input_precision=PRECISION) * s[None, :]
        else:  # an fp8 weight is widened to the activations' dtype, exactly
            w = tl.load(w_ptrs, mask=k_in[:, None] & n_ok[None, :], other=0.0)
            acc += tl.dot(a, w.to(a.dtype), input_precision=PRECISION)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if W_SCALE == 1:
        acc *= tl.load(s_expert + offs_n, mask=n_ok, other=0.0)[None, :]
    if MUL_WEIGHT:
        acc *= tl.load(weights_ptr + ids, mask=valid, other=0.0)[:, None]
    c_ptrs = c_ptr + ids.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & (offs_n[None, :] < N))


class Int4Experts(NamedTuple):
    """Stacked int4 experts in kernels/quant_reference.py's layout, per expert."""

    qweight: torch.Tensor  # [E, K / 8, N] int32
    scales: torch.Tensor  # [E, K / G, N]
    zeros: torch.Tensor  # [E, K / G, N]
    group: int  # G


def moe_gemm(a: torch.Tensor, w: torch.Tensor | Int4Experts, c: torch.Tensor, sorted_ids: torch.Tensor,
             block_expert: torch.Tensor, top_k: int, a_per_token: bool, weights: torch.Tensor | None, block_m: int,
             w_scale: torch.Tensor | None = None, block: tuple[int, int] | None = None) -> None:
    """c [T*k, N] rows of sorted_ids = a rows @ w[expert]^T (see the module); w [E, N, K] contiguous.
    An fp8 w comes with w_scale: [E, N] per channel, or [E, N / bn, K / bk] with block (bn, bk);
    int4 experts as Int4Experts."""
    num_rows, n = c.shape
    int4 = isinstance(w, Int4Experts)
    k = w.qweight.shape[1] * 8 if isinstance(w, Int4Experts) else w.shape[2]
    block_n = min(128, max(16, triton.next_power_of_2(n)))
    block_k = min(64, max(16, triton.next_power_of_2(k)))
    mode = 3 if int4 else 0 if w_scale is None else 2 if block is not None else 1
    scale_n, scale_k = block if block is not None else (1, 1)
    zeros = c
    if isinstance(w, Int4Experts):  # tiles that divide N and the group exactly
        block_n = next(b for b in (128, 64, 32, 16) if n % b == 0)
        block_k = next(b for b in (64, 32, 16) if w.group % b == 0)
        scale_k, w_scale, zeros, w = w.group, w.scales, w.zeros, w.qweight
    elif mode == 2:
        block_k = min(block_k, scale_k)
    scales = w_scale if w_scale is not None else c
    grid = (block_expert.numel(), triton.cdiv(n, block_n))
    _moe_gemm_kernel[grid](
        a, w, c, weights if weights is not None else c, sorted_ids, block_expert, scales, zeros,
        n, k, num_rows, top_k, w.shape[0], a.stride(0), w.stride(0), w.stride(1), c.stride(0),
        scales.stride(0) if mode else 0, scales.stride(1) if mode >= 2 else 0,
        A_PER_TOKEN=a_per_token, MUL_WEIGHT=weights is not None,
        # float32 models stay exact (HF's reference); bf16 / fp16 run on the tensor cores either way
        PRECISION="ieee" if a.dtype == torch.float32 else "tf32",
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, W_SCALE=mode, SCALE_N=scale_n, SCALE_K=scale_k,
        num_warps=4,
    )


def block_m_for(num_rows: int, num_experts: int) -> int:
    """The tile height: small when each expert gets a few rows (decode), else larger."""
    per_expert = num_rows / num_experts
    return 16 if per_expert <= 16 else 32 if per_expert <= 64 else 64


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, w13_scale: torch.Tensor | None = None, w2_scale: torch.Tensor | None = None,
              block: tuple[int, int] | None = None) -> torch.Tensor:
    """x [T, H], w13 [E, 2I, H], w2 [E, H, I], topk_weights [T, k] float32, topk_ids [T, k] -> [T, H].
    fp8 experts come with their scales (moe_gemm), dequantized in the GEMMs' tiles."""
    from pagedllm.kernels.triton.activation import silu_and_mul

    num_tokens, top_k = topk_ids.shape
    num_experts = w13.shape[0]
    block_m = block_m_for(num_tokens * top_k, num_experts)
    sorted_ids, block_expert = align_by_expert(topk_ids, num_experts, block_m)
    gate_up = torch.empty(num_tokens * top_k, w13.shape[1], dtype=x.dtype, device=x.device)
    moe_gemm(x, w13, gate_up, sorted_ids, block_expert, top_k, True, None, block_m, w13_scale, block)
    act = silu_and_mul(gate_up)  # [T*k, I]
    down = torch.empty(num_tokens * top_k, w2.shape[1], dtype=x.dtype, device=x.device)
    moe_gemm(act, w2, down, sorted_ids, block_expert, top_k, False, topk_weights.reshape(-1), block_m, w2_scale,
             block)
    return down.view(num_tokens, top_k, -1).sum(dim=1)


def fused_moe_int4(x: torch.Tensor, w13: Int4Experts, w2: Int4Experts, topk_weights: torch.Tensor,
                   topk_ids: torch.Tensor) -> torch.Tensor:
    """fused_moe with int4 experts: w13 [E, H / 8, 2I] and w2 [E, I / 8, H] packed, per-group scales
    and zeros (layers/int4_moe.py), dequantized in the GEMMs' tiles."""
    from pagedllm.kernels.triton.activation import silu_and_mul

    num_tokens, top_k = topk_ids.shape
    num_experts = w13.qweight.shape[0]
    block_m = block_m_for(num_tokens * top_k, num_experts)
    sorted_ids, block_expert = align_by_expert(topk_ids, num_experts, block_m)
    gate_up = torch.empty(num_tokens * top_k, w13.qweight.shape[2], dtype=x.dtype, device=x.device)
    moe_gemm(x, w13, gate_up, sorted_ids, block_expert, top_k, True, None, block_m)
    act = silu_and_mul(gate_up)  # [T*k, I]
    down = torch.empty(num_tokens * top_k, w2.qweight.shape[2], dtype=x.dtype, device=x.device)
    moe_gemm(act, w2, down, sorted_ids, block_expert, top_k, False, topk_weights.reshape(-1), block_m)
    return down.view(num_tokens, top_k, -1).sum(dim=1)
