"""Inverse-CDF sampling of one token per row on the GPU in two launches, instead of the torch
version's amax, sub, exp, cumsum and searchsorted passes over the [N, V] logits (and the division
by the temperature, which folds in here).

    logits           [N, V]  float32, last dim contiguous; -inf where a token is masked
    u                [N]     float32 uniform draws in [0, 1), one per row from its own generator
    inv_temperature  [N]     float32, optional: 1 / T per row, when the logits are not yet scaled
    returns          [N]     int64: the first token whose running sum of
                             exp((logit - max) / T) passes u * total

Pass 1, a program per (row, chunk of CHUNK tokens): the chunk's max m_c and its sum of
exp((logit - m_c) / T). Pass 2, a program per row: the row's max M, each chunk's weight
w_c = sum_c * exp((m_c - M) / T), their running sum; the chunk where it passes u * total; then a
running sum over that chunk's weights, exp((logit - M) / T), for what is left of the target.
Only one chunk per row is read twice: the logits cross memory once.

The same choice as the C++ stage on the CPU (kernels/cpu/sampling.cpp): tokens of weight 0 are
never picked; where float rounding leaves the scan short of its target, the last token of
positive weight (of the chunk) is; a row with nothing allowed gives token 0.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 2048  # tokens a pass-1 program reduces: 63 chunks for a 128k vocabulary


@triton.jit
def _row_scale(inv_t_ptr, row, HAS_T: tl.constexpr):
    """log2(e) / T of the row: exp(x / T) = exp2(x * scale)."""
    log2e = 1.4426950408889634
    scale = log2e
    if HAS_T:
        scale = tl.load(inv_t_ptr + row) * log2e
    return scale


@triton.jit
def _chunk_stats_kernel(
    logits_ptr, inv_t_ptr, max_ptr, sum_ptr,  # [N, V], [N], [N, C], [N, C]
    stride_l, vocab, num_chunks,
    CHUNK: tl.constexpr, HAS_T: tl.constexpr,
):
    pid = tl.program_id(0)
    row = pid // num_chunks
    cols = (pid % num_chunks) * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(logits_ptr + row.to(tl.int64) * stride_l + cols, mask=cols < vocab, other=float("-inf"))
    scale = _row_scale(inv_t_ptr, row, HAS_T)
    m = tl.max(x, 0)
    m_ref = tl.where(m == float("-inf"), 0.0, m)  # an all-masked chunk: weights 0, not NaN
    e = tl.where(x == float("-inf"), 0.0, tl.exp2((x - m_ref) * scale))
    tl.store(max_ptr + pid, m)
    tl.store(sum_ptr + pid, tl.sum(e, 0))


@triton.jit
def _pick_kernel(
    out_ptr, logits_ptr, inv_t_ptr, u_ptr, max_ptr, sum_ptr,  # [N], [N, V], [N], [N], [N, C], [N, C]
    stride_l, vocab, num_chunks,
    CHUNK: tl.constexpr, CHUNKS_PAD: tl.constexpr, HAS_T: tl.constexpr,
):
    row = tl.program_id(0)
    scale = _row_scale(inv_t_ptr, row, HAS_T)
    ci = tl.arange(0, CHUNKS_PAD)
    stats = row * num_chunks + ci
    m_c = tl.load(max_ptr + stats, mask=ci < num_chunks, other=float("-inf"))
    s_c = tl.load(sum_ptr + stats, mask=ci < num_chunks, other=0.0)
    big = tl.max(m_c, 0)
    big_ref = tl.where(big == float("-inf"), 0.0, big)
    w_c = tl.where(m_c == float("-inf"), 0.0, s_c * tl.exp2((m_c - big_ref) * scale))
    cum_c = tl.cumsum(w_c, 0)
    total = tl.max(cum_c, 0)  # the last running sum (weights are >= 0)
    target = tl.load(u_ptr + row) * total
    # The first chunk of positive weight whose running sum passes the target, else the last one
    # of positive weight (u * total rounded up to total).
    chunk = tl.min(tl.where((cum_c > target) & (w_c > 0.0), ci, CHUNKS_PAD), 0)
    chunk = tl.where(chunk == CHUNKS_PAD, tl.max(tl.where(w_c > 0.0, ci, 0), 0), chunk)
    rest = target - tl.sum(tl.where(ci == chunk - 1, cum_c, 0.0), 0)
    offs = tl.arange(0, CHUNK)
    cols = chunk * CHUNK + offs
    x = tl.load(logits_ptr + row.to(tl.int64) * stride_l + cols, mask=cols < vocab, other=float("-inf"))
    e = tl.where(x == float("-inf"), 0.0, tl.exp2((x - big_ref) * scale))
    cum = tl.cumsum(e, 0)
    pick = tl.min(tl.where((cum > rest) & (e > 0.0), offs, CHUNK), 0)
    # Rounding left the scan short: the chunk's last token of positive weight, or (all of its
    # weights underflowed on the way) its largest logit.
    last = tl.max(tl.where(e > 0.0, offs, -1), 0)
    last = tl.where(last < 0, tl.argmax(x, 0), last)
    pick = tl.where(pick == CHUNK, last, pick)
    token = tl.where(big == float("-inf"), 0, chunk * CHUNK + pick)
    tl.store(out_ptr + row, token.to(tl.int64))


def sample_from_logits(logits: torch.Tensor, u: torch.Tensor,
                       inv_temperature: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row of `logits` [N, V] for the uniforms `u` [N] (see the module docstring)."""
    assert logits.dtype == torch.float32 and logits.dim() == 2 and logits.stride(1) == 1
    num_rows, vocab = logits.shape
    assert u.dtype == torch.float32 and u.numel() == num_rows
    assert inv_temperature is None or (inv_temperature.dtype == torch.float32 and inv_temperature.numel() == num_rows)
    out = torch.empty(num_rows, dtype=torch.int64, device=logits.device)
    if num_rows == 0:
        return out
    num_chunks = triton.cdiv(vocab, CHUNK)
    stats = torch.empty(2, num_rows, num_chunks, dtype=torch.float32, device=logits.device)
    inv_t = inv_temperature if inv_temperature is not None else u  # unused without HAS_T
    has_t = inv_temperature is not None
    _chunk_stats_kernel[(num_rows * num_chunks,)](
        logits, inv_t, stats[0], stats[1], logits.stride(0), vocab, num_chunks,
        CHUNK=CHUNK, HAS_T=has_t, num_warps=4,
    )
    _pick_kernel[(num_rows,)](
        out, logits, inv_t, u.reshape(-1), stats[0], stats[1], logits.stride(0), vocab, num_chunks,
        CHUNK=CHUNK, CHUNKS_PAD=triton.next_power_of_2(num_chunks), HAS_T=has_t, num_warps=4,
    )
    return out
