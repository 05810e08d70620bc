"""Linear layers for steps of at most 16 rows (decode at small batch): a GEMM whose time is the
weight read, with what cuBLAS cannot do around it.

x is one [BLOCK_M = 16, K] tile (the step's rows, the rest masked to zero) and the weight streams
through in [BLOCK_K, BLOCK_N] tiles. Loads that feed tl.dot are what Triton's software pipeliner
turns into asynchronous copies (cp.async) with NUM_STAGES tiles in flight: an elementwise GEMV of
plain register loads kept too few bytes in flight per SM and streamed 1.4-2.5 TB/s where cuBLAS
streams 2.3-2.7 (a dropped split-K GEMV, benchmarks/RESULTS.md 2026-12-06); this one matches
cuBLAS per projection (benchmarks/gpu/bench_gemv_dot.py). The tensor cores' padded rows cost
nothing that matters at this size. Around the product:

* split-K with the reduce in the same launch: each program writes float32 partials, counts itself
  in an atomic counter per column tile, and the last to count sums the partials in split order
  (the same sum whichever program is last) and resets the counter: no reduce kernel;
* epilogues: added into a residual (the o and down projections, as cuBLAS's beta = 1 does), or,
  for a merged | gate | up | weight, silu(gate) * up, each row first scaled by 1 / rms(its norm
  input) where the post-attention norm is folded into gate_up (models/norm_folding.py), with the
  roundings of kernels/triton/activation.py: the SiLU launch is gone;
* programmatic dependent launch (PDL): a program loads its first weight tiles before
  `griddepcontrol.wait` (weights do not depend on the kernel before) and lets its dependents
  launch once its loop is done, so consecutive launches overlap at their boundary. Nothing the
  previous kernel writes is read, and no partial or counter is touched, before the wait.

The partials and counters live in one workspace per (device, shape) shared by every layer: the
layers run one after another on the stream, and with PDL a kernel touches them only after its
wait, when the kernel before has finished. A workspace is allocated at the first call of its
shape, which must come outside a CUDA-graph capture (each capture follows an eager run).

Where it runs is the linear method's choice, made once per weight at load
(layers/skinny_linear.py, KernelConfig.skinny_gemm): `skinny_config` gives the launch shape of a
weight under a policy, or None. "auto" takes bf16/fp16 weights of at least 16M elements: a GEMV
of that size is bound by its weight read, where cuBLAS's kernels leave the launch boundary and
PDL's overlap on the table; smaller weights stay on cuBLAS, whose kernels start faster
(RESULTS.md, 2026-12-05/06). With PDL the decode attention kernel joins the chain
(kernels/triton/paged_attention.py): it lets the o projection launch and load its first weight
tiles while it runs.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagedllm.kernels.triton.int4_gemm import dequant_int4_tile, load_int4_tile

MAX_ROWS = 16  # BLOCK_M: the rows one program's tile holds


@dataclass(frozen=True)
class GemvConfig:
    block_n: int
    block_k: int
    split_k: int
    num_stages: int = 4
    num_warps: int = 4


@triton.jit
def _load_w(w_ptr, k0, col0, stride_w, stride_wn, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
            W_SCALE: tl.constexpr):
    """The [BLOCK_K, BLOCK_N] weight tile at rows k0.., columns col0.. (stride_wn 1: a [K, N]
    weight; an fp8 weight comes as its checkpoint's [N, K], stride_w 1); an int4 weight's
    (W_SCALE 3) packed words of those rows, [BLOCK_K / 8, BLOCK_N]."""
    if W_SCALE == 3:
        return load_int4_tile(w_ptr, k0, col0, stride_w, BLOCK_K, BLOCK_N)
    ks = k0 + tl.arange(0, BLOCK_K)
    cols = col0 + tl.arange(0, BLOCK_N)
    return tl.load(w_ptr + ks.to(tl.int64)[:, None] * stride_w + cols.to(tl.int64)[None, :] * stride_wn)


@triton.jit
def _tile_dot(x, w, acc, s_ptr, z_ptr, k0, col0, stride_s, BLOCK_N: tl.constexpr, W_SCALE: tl.constexpr,
              SCALE_B: tl.constexpr):
    """acc + x @ w for one K tile. An fp8 weight is widened to x's dtype (exact) for the tensor
    cores; with block scales (W_SCALE 2) the tile's product is scaled by its columns' scales of
    this K block before it is added (BLOCK_K divides SCALE_B, so one K block per tile). An int4
    weight (W_SCALE 3) is unpacked and dequantized with its group's scales and zeros (groups of
    SCALE_B input features)."""
    if W_SCALE == 3:
        wq = dequant_int4_tile(w, s_ptr, z_ptr, k0, col0, stride_s, SCALE_B, x.shape[1], BLOCK_N, x.dtype)
        return tl.dot(x, wq, acc)
    if W_SCALE == 2:
        cols = col0 + tl.arange(0, BLOCK_N)
        s = tl.load(s_ptr + (cols // SCALE_B) * stride_s + k0 // SCALE_B)
        return acc + tl.dot(x, w.to(x.dtype)) * s[None, :]
    return tl.dot(x, w.to(x.dtype), acc)


@triton.jit
def _column_scale(acc, s_ptr, col0, BLOCK_N: tl.constexpr, W_SCALE: tl.constexpr):
    """A per-channel fp8 weight's scales (W_SCALE 1) on the finished sums of columns col0.."""
    if W_SCALE == 1:
        return acc * tl.load(s_ptr + col0 + tl.arange(0, BLOCK_N))[None, :]
    return acc


@triton.jit
def _inv_rms_rows(norm_ptr, rows, row_ok, stride_norm, eps, NORM_H: tl.constexpr, CHUNK: tl.constexpr):
    """[BLOCK_M] float32: 1 / sqrt(mean(h^2) + eps) of each row of norm_ptr."""
    total = tl.zeros([rows.shape[0]], tl.float32)
    for c in range(0, NORM_H, CHUNK):
        hc = c + tl.arange(0, CHUNK)
        h = tl.load(norm_ptr + rows[:, None] * stride_norm + hc[None, :],
                    mask=row_ok[:, None] & (hc < NORM_H)[None, :], other=0.0).to(tl.float32)
        total += tl.sum(h * h, 1)
    return tl.rsqrt(total / NORM_H + eps)


@triton.jit
def _epilogue(out_ptr, gate, up, rows, row_ok, cols, norm_ptr, stride_out, stride_norm, eps,
              ACCUMULATE: tl.constexpr, GATED: tl.constexpr, NORM: tl.constexpr, NORM_H: tl.constexpr):
    """Store finished [BLOCK_M, BLOCK_N] float32 sums: as they are, added into out, or (GATED)
    silu(gate) * up, gate and up first scaled by the row's 1 / rms(norm row) with NORM, rounded
    where silu_and_mul (kernels/triton/activation.py) rounds."""
    dtype = out_ptr.dtype.element_ty
    ptrs = out_ptr + rows[:, None] * stride_out + cols[None, :]
    mask = row_ok[:, None]
    if GATED:
        g = gate.to(dtype).to(tl.float32)  # the gate_up output, as if materialised
        u = up.to(dtype).to(tl.float32)
        if NORM:
            inv = _inv_rms_rows(norm_ptr, rows, row_ok, stride_norm, eps, NORM_H, 512)[:, None]
            g = (g * inv).to(dtype).to(tl.float32)
            u = (u * inv).to(dtype).to(tl.float32)
        silu = (g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32)
        tl.store(ptrs, (silu * u).to(dtype), mask=mask)
    elif ACCUMULATE:
        tl.store(ptrs, (gate + tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)).to(dtype), mask=mask)
    else:
        tl.store(ptrs, gate.to(dtype), mask=mask)


@triton.jit
def _skinny_gemm_kernel(
    out_ptr,  # [M, N_OUT] (row stride stride_out): written, or added into with ACCUMULATE
    x_ptr,  # [M, K] (row stride stride_x), M <= BLOCK_M
    w_ptr,  # [K, N_W] (row stride stride_w); GATED: | gate | up |
    part_ptr,  # [SPLIT_K, 1 + GATED, BLOCK_M, N_OUT] float32 partials (SPLIT_K > 1)
    counter_ptr,  # [N_OUT / BLOCK_N] int32, zero between launches (SPLIT_K > 1)
    norm_ptr,  # [M, NORM_H] (row stride stride_norm): the un-normalised hidden state (NORM)
    s_ptr,  # fp8 weights' scales: [N_W] (W_SCALE 1) or [N_W / SCALE_B, K / SCALE_B] (2, row stride stride_s);
    # int4 weights' (3): [K / SCALE_B, N_W] (row stride stride_s)
    z_ptr,  # int4 weights' zeros, as their scales
    M, stride_x, stride_w, stride_wn, stride_out, stride_norm, stride_s, eps,
    N_OUT: tl.constexpr, K_PER_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, ACCUMULATE: tl.constexpr, GATED: tl.constexpr,
    NORM: tl.constexpr, NORM_H: tl.constexpr, PDL: tl.constexpr, NUM_STAGES: tl.constexpr,
    W_SCALE: tl.constexpr, SCALE_B: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    col0 = pid_n * BLOCK_N
    cols = col0 + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < M
    k_lo = pid_k * K_PER_SPLIT
    # The first weight tiles do not depend on the kernel before: ask for them before waiting.
    w = _load_w(w_ptr, k_lo, col0, stride_w, stride_wn, BLOCK_K, BLOCK_N, W_SCALE)
    if GATED:
        w_up = _load_w(w_ptr, k_lo, col0 + N_OUT, stride_w, stride_wn, BLOCK_K, BLOCK_N, W_SCALE)
    if PDL:
        tl.extra.cuda.gdc_wait()
    ks = k_lo + tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + rows[:, None] * stride_x + ks[None, :], mask=row_ok[:, None], other=0.0)
    acc = _tile_dot(x, w, tl.zeros([BLOCK_M, BLOCK_N], tl.float32), s_ptr, z_ptr, k_lo, col0, stride_s,
                    BLOCK_N, W_SCALE, SCALE_B)
    acc_up = acc
    if GATED:
        acc_up = _tile_dot(x, w_up, tl.zeros([BLOCK_M, BLOCK_N], tl.float32), s_ptr, z_ptr, k_lo, col0 + N_OUT,
                           stride_s, BLOCK_N, W_SCALE, SCALE_B)
    for i in tl.range(1, K_PER_SPLIT // BLOCK_K, num_stages=NUM_STAGES):
        k0 = k_lo + i * BLOCK_K
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows[:, None] * stride_x + ks[None, :], mask=row_ok[:, None], other=0.0)
        acc = _tile_dot(x, _load_w(w_ptr, k0, col0, stride_w, stride_wn, BLOCK_K, BLOCK_N, W_SCALE), acc, s_ptr,
                        z_ptr, k0, col0, stride_s, BLOCK_N, W_SCALE, SCALE_B)
        if GATED:
            acc_up = _tile_dot(x, _load_w(w_ptr, k0, col0 + N_OUT, stride_w, stride_wn, BLOCK_K, BLOCK_N, W_SCALE),
                               acc_up, s_ptr, z_ptr, k0, col0 + N_OUT, stride_s, BLOCK_N, W_SCALE, SCALE_B)
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    acc = _column_scale(acc, s_ptr, col0, BLOCK_N, W_SCALE)
    if GATED:
        acc_up = _column_scale(acc_up, s_ptr, col0 + N_OUT, BLOCK_N, W_SCALE)
    if SPLIT_K == 1:
        _epilogue(out_ptr, acc, acc_up, rows, row_ok, cols, norm_ptr, stride_out, stride_norm, eps,
                  ACCUMULATE, GATED, NORM, NORM_H)
    else:
        parts: tl.constexpr = 2 if GATED else 1
        tile = rows[:, None] * N_OUT + cols[None, :]
        part = part_ptr + pid_k * parts * BLOCK_M * N_OUT
        tl.store(part + tile, acc, mask=row_ok[:, None])
        if GATED:
            tl.store(part + BLOCK_M * N_OUT + tile, acc_up, mask=row_ok[:, None])
        tl.debug_barrier()  # every thread's partials before the count (released at GPU scope)
        if tl.atomic_add(counter_ptr + pid_n, 1, sem="acq_rel") == SPLIT_K - 1:
            gate = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for s in range(SPLIT_K):  # in split order: the same sum whichever program is last
                part = part_ptr + s * parts * BLOCK_M * N_OUT
                # .cg: past the non-coherent L1, to what the other programs released
                gate += tl.load(part + tile, mask=row_ok[:, None], other=0.0, cache_modifier=".cg")
                if GATED:
                    up += tl.load(part + BLOCK_M * N_OUT + tile, mask=row_ok[:, None], other=0.0,
                                  cache_modifier=".cg")
            _epilogue(out_ptr, gate, up, rows, row_ok, cols, norm_ptr, stride_out, stride_norm, eps,
                      ACCUMULATE, GATED, NORM, NORM_H)
            tl.atomic_xchg(counter_ptr + pid_n, 0)


SKINNY_POLICIES = ("auto", "on", "off")
_AUTO_MIN_WEIGHT = 16 << 20  # elements of [K, N]: Llama-3-8B's o projection (4096 x 4096) and up


@functools.cache
def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (launch shapes aim at about one program per
    SM); 4 for the interpreter's CPU tensors."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


@functools.cache
def pick_config(k: int, n_out: int, gated: bool, num_sms: int) -> GemvConfig | None:
    """A launch shape for a [K, N_OUT] (x2 gated) weight, or None where none divides it. About one
    program per SM, each with many bytes in flight, is what streamed fastest on an H100 (the
    Llama-3-8B projections, RESULTS.md 2026-12-06): BLOCK_K 128, BLOCK_N 64 (128 gated: the
    program reads a gate and an up tile), K split while the grid stays within one program per SM,
    and as many pipeline stages as 208 KiB of shared memory holds (at most 5)."""
    block_n = next((b for b in ((128, 64, 32, 16) if gated else (64, 32, 16)) if n_out % b == 0), None)
    block_k = next((b for b in (128, 64, 32, 16) if k % b == 0), None)
    if block_n is None or block_k is None:
        return None
    tiles = n_out // block_n
    split = 1
    while (tiles * split * 2 <= num_sms and split < 16 and k % (2 * split * block_k) == 0
           and k // (2 * split) >= 2 * block_k):
        split *= 2
    stage_bytes = (block_k * block_n * (2 if gated else 1) + MAX_ROWS * block_k) * 2
    return GemvConfig(block_n, block_k, split, num_stages=max(2, min(5, (208 << 10) // stage_bytes)))


class _Workspaces:
    """Partials and counters per (device, numel): shared by every layer of that shape."""

    def __init__(self) -> None:
        self._parts: dict[tuple[torch.device, int], torch.Tensor] = {}
        self._counters: dict[tuple[torch.device, int], torch.Tensor] = {}

    def get(self, device: torch.device, part_numel: int, num_counters: int) -> tuple[torch.Tensor, torch.Tensor]:
        key_p, key_c = (device, part_numel), (device, num_counters)
        if key_p not in self._parts or key_c not in self._counters:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                raise RuntimeError("The skinny GEMM's workspace must be allocated before CUDA graph "
                                   "capture: run the same shapes eagerly first.")
            if key_p not in self._parts:
                self._parts[key_p] = torch.empty(part_numel, dtype=torch.float32, device=device)
            if key_c not in self._counters:
                self._counters[key_c] = torch.zeros(num_counters, dtype=torch.int32, device=device)
        return self._parts[key_p], self._counters[key_c]


_WORKSPACES = _Workspaces()


# bf16/fp16 weights; fp8 e4m3 (weight-only); int32: int4 packed 8 to a word along K
_SKINNY_DTYPES = (torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.int32)


def skinny_config(k: int, n_w: int, dtype: torch.dtype, policy: str, sms: int,
                  gated: bool = False) -> GemvConfig | None:
    """The launch shape for steps of at most 16 rows against a [K, N_W] weight of `dtype` (gated:
    | gate | up |, so N_W = 2 I), or None where this path does not take it: the policy is "off",
    or "auto" and a bf16/fp16 weight is under 16M elements, or the dtype is not bf16/fp16/fp8
    (float32 stays on cuBLAS: tl.dot would round it to tf32), or no launch shape divides the
    weight. An fp8 or int4 (int32: packed) weight of any size takes it under "auto": cuBLAS has no
    weight-only fp8 or int4 GEMM, and the others pad a few rows to a 64-row tile."""
    if policy not in SKINNY_POLICIES:
        raise ValueError(f"skinny GEMM policy must be one of {SKINNY_POLICIES}, got {policy!r}")
    if policy == "off" or dtype not in _SKINNY_DTYPES or (gated and n_w % 2):
        return None
    if policy == "auto" and dtype in (torch.bfloat16, torch.float16) and k * n_w < _AUTO_MIN_WEIGHT:
        return None
    return pick_config(k, n_w // 2 if gated else n_w, gated, sms)


def takes_rows(x: torch.Tensor, weight_t: torch.Tensor) -> bool:
    """Whether a step's x fits the kernel: [1..16, K] row-contiguous, of the weight's dtype (or
    bf16/fp16 against an fp8 weight)."""
    return (x.dim() == 2 and 0 < x.shape[0] <= MAX_ROWS and x.stride(-1) == 1
            and (x.dtype == weight_t.dtype or (weight_t.dtype == torch.float8_e4m3fn
                                               and x.dtype in (torch.bfloat16, torch.float16))))


def skinny_gemm(
    x: torch.Tensor,  # [M <= 16, K]
    weight_t: torch.Tensor,  # [K, N] (gated: | gate | up |, N = 2 I)
    cfg: GemvConfig,
    out: torch.Tensor | None = None,  # [M, N] (gated: [M, I]); with accumulate, added into
    accumulate: bool = False,
    gated: bool = False,
    norm_input: torch.Tensor | None = None,  # gated: [M, H], scale rows by 1 / rms(norm row)
    eps: float = 0.0,
    pdl: bool = False,
    weight_scale: torch.Tensor | None = None,  # fp8 weight_t: float32 [N] or [N / B, K / B] (scale_block B)
    scale_block: int = 0,
    weight_zeros: torch.Tensor | None = None,  # int4 weight_t (int32 [K / 8, N]): [K / B, N], as weight_scale
) -> torch.Tensor:
    """x @ weight_t into `out` (a new tensor when None), added into it with `accumulate`; gated:
    silu(gate) * up of the product (after the norm scale with `norm_input`). pdl (CUDA): launched
    as a programmatic dependent of the kernel before it. An fp8 weight_t (any strides, e.g. the
    transpose of a checkpoint's [N, K]) comes with its weight_scale: per column, or per B x B block
    with scale_block B (the launch shape's BLOCK_K must divide B). A packed int4 weight_t (int32
    [K / 8, N]) comes with its scales and zeros per group of scale_block input features."""
    m, k = x.shape
    n_out = weight_t.shape[1] // 2 if gated else weight_t.shape[1]
    # With split-K the last program of a column tile writes `out` while others still read x.
    assert not (accumulate and (gated or out is None or out.data_ptr() == x.data_ptr()))
    if out is None:
        out = torch.empty(m, n_out, dtype=x.dtype, device=x.device)
    assert out.shape == (m, n_out) and out.stride(-1) == 1
    assert n_out % cfg.block_n == 0 and k % (cfg.split_k * cfg.block_k) == 0
    norm = norm_input if norm_input is not None else x
    assert norm.dim() == 2 and norm.stride(-1) == 1 and norm.shape[0] >= m
    parts = (2 if gated else 1) * MAX_ROWS * n_out * cfg.split_k if cfg.split_k > 1 else 1
    part, counters = _WORKSPACES.get(x.device, parts, n_out // cfg.block_n)
    pdl = pdl and x.is_cuda
    w_scale = 0 if weight_scale is None else 3 if weight_zeros is not None else 2 if scale_block else 1
    assert w_scale < 2 or scale_block % cfg.block_k == 0
    scales = weight_scale if weight_scale is not None else part
    zeros = weight_zeros if weight_zeros is not None else scales
    _skinny_gemm_kernel[(n_out // cfg.block_n, cfg.split_k)](
        out, x, weight_t, part, counters, norm, scales, zeros,
        m, x.stride(0), weight_t.stride(0), weight_t.stride(1), out.stride(0), norm.stride(0),
        scales.stride(0) if w_scale >= 2 else 0, eps,
        N_OUT=n_out, K_PER_SPLIT=k // cfg.split_k, BLOCK_M=MAX_ROWS, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        SPLIT_K=cfg.split_k, ACCUMULATE=accumulate, GATED=gated, NORM=norm_input is not None,
        NORM_H=norm.shape[1], PDL=pdl, NUM_STAGES=cfg.num_stages, W_SCALE=w_scale, SCALE_B=max(scale_block, 1),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **({"launch_pdl": True} if pdl else {}),
    )
    return out
