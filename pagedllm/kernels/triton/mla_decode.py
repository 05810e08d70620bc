"""Decode attention of multi-head latent attention (MLA, models/deepseek.py) on the GPU: every head
of a request attends over the request's cached rows [c (rank), k_pe (rope)], which are its keys,
and over their c part, its values, in the absorbed form. Each row is read once for both.

    query       [B, H, rank + rope]   (q_nope W_UK | q_pe), any float dtype
    cache       [NB, bs, 1, rank + rope]  one layer's rows (K and V are the same tensor)
    block_table [B, max_blocks] int32, seq_lens [B] int32
    out         [B, H, rank]

Split-K: (request, split of its context, block of BLOCK_H heads) programs each keep a running
max, sum and [BLOCK_H, rank] accumulator in float32 over their keys, BLOCK_N at a time; a second
launch combines the splits by their log-sum-exp. The rank and rope parts are loaded as separate
tiles (each padded to a power of two, as tl.dot needs), so DeepSeek's 512 + 64 wastes nothing.
The torch reference is mla_decode_reference; tests hold the kernel to it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _mla_split_kernel(
    q_ptr, cache_ptr, table_ptr, seq_lens_ptr, part_out_ptr, part_lse_ptr,
    scale, num_heads, max_blocks, block_size, split_len, num_splits,
    RANK: tl.constexpr, ROPE: tl.constexpr, RANK_P: tl.constexpr, ROPE_P: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    split = tl.program_id(1)
    heads = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    head_in = heads < num_heads
    row_len: tl.constexpr = RANK + ROPE
    seq_len = tl.load(seq_lens_ptr + b)
    start = split * split_len
    end = tl.minimum(start + split_len, seq_len)
    r = tl.arange(0, RANK_P)
    e = tl.arange(0, ROPE_P)
    q_rows = (b * num_heads + heads).to(tl.int64) * row_len
    q_lat = tl.load(q_ptr + q_rows[:, None] + r[None, :], mask=head_in[:, None] & (r[None, :] < RANK), other=0.0)
    q_pe = tl.load(q_ptr + q_rows[:, None] + RANK + e[None, :], mask=head_in[:, None] & (e[None, :] < ROPE),
                   other=0.0)
    m = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_H,), tl.float32)
    acc = tl.zeros((BLOCK_H, RANK_P), tl.float32)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_in = n < end
        block = tl.load(table_ptr + b * max_blocks + n // block_size, mask=n_in, other=0)
        slot = (block.to(tl.int64) * block_size + n % block_size) * row_len
        c = tl.load(cache_ptr + slot[:, None] + r[None, :], mask=n_in[:, None] & (r[None, :] < RANK), other=0.0)
        k_pe = tl.load(cache_ptr + slot[:, None] + RANK + e[None, :], mask=n_in[:, None] & (e[None, :] < ROPE),
                       other=0.0)
        scores = (tl.dot(q_lat, tl.trans(c), input_precision=PRECISION)
                  + tl.dot(q_pe, tl.trans(k_pe), input_precision=PRECISION)) * scale  # [BLOCK_H, BLOCK_N]
        scores = tl.where(n_in[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, 1))
        p = tl.exp(scores - m_new[:, None])
        alpha = tl.exp(m - m_new)
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(c.dtype), c, input_precision=PRECISION)
        m = m_new
    part = (b * num_splits + split).to(tl.int64) * num_heads + heads
    empty = l == 0.0  # a split past the context
    out = tl.where(empty[:, None], 0.0, acc / tl.where(empty, 1.0, l)[:, None])
    tl.store(part_out_ptr + part[:, None] * RANK + r[None, :], out, mask=head_in[:, None] & (r[None, :] < RANK))
    tl.store(part_lse_ptr + part, tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, l))), mask=head_in)


@triton.jit
def _mla_combine_kernel(part_out_ptr, part_lse_ptr, out_ptr, num_heads, num_splits,
                        RANK: tl.constexpr, RANK_P: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    r = tl.arange(0, RANK_P)
    lse_max = float("-inf")
    for s in range(0, num_splits):
        lse_max = tl.maximum(lse_max, tl.load(part_lse_ptr + (b * num_splits + s) * num_heads + h))
    total = 0.0
    acc = tl.zeros((RANK_P,), tl.float32)
    for s in range(0, num_splits):
        part = (b * num_splits + s) * num_heads + h
        w = tl.exp(tl.load(part_lse_ptr + part) - lse_max)
        total += w
        acc += w * tl.load(part_out_ptr + part.to(tl.int64) * RANK + r, mask=r < RANK, other=0.0)
    tl.store(out_ptr + (b * num_heads + h).to(tl.int64) * RANK + r, (acc / total).to(out_ptr.dtype.element_ty),
             mask=r < RANK)


def mla_decode(query: torch.Tensor, cache: torch.Tensor, block_table: torch.Tensor, seq_lens: torch.Tensor,
               rank: int, scale: float, num_splits: int, workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """out [B, H, rank] (see the module); `workspace` (part_out [>= B*splits, H, rank], part_lse
    [>= B*splits, H], float32) is allocated here when not given (not inside a captured graph)."""
    num_reqs, num_heads, row_len = query.shape
    rope = row_len - rank
    assert cache.shape[-1] == row_len and cache.stride(-1) == 1 and query.is_contiguous()
    block_size = cache.shape[1]
    if workspace is None:
        workspace = (torch.empty(num_reqs * num_splits, num_heads, rank, dtype=torch.float32, device=query.device),
                     torch.empty(num_reqs * num_splits, num_heads, dtype=torch.float32, device=query.device))
    part_out, part_lse = workspace
    if out is None:
        out = torch.empty(num_reqs, num_heads, rank, dtype=query.dtype, device=query.device)
    max_len = block_table.shape[1] * block_size
    split_len = triton.cdiv(triton.cdiv(max_len, num_splits), 16) * 16
    block_h = 16
    grid = (num_reqs, num_splits, triton.cdiv(num_heads, block_h))
    _mla_split_kernel[grid](
        query, cache, block_table, seq_lens, part_out, part_lse, scale, num_heads, block_table.shape[1],
        block_size, split_len, num_splits, RANK=rank, ROPE=rope, RANK_P=max(16, triton.next_power_of_2(rank)),
        ROPE_P=max(16, triton.next_power_of_2(rope)), BLOCK_H=block_h, BLOCK_N=32,
        # float32 models stay exact (HF's reference); bf16 / fp16 run on the tensor cores either way
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32", num_warps=4,
    )
    _mla_combine_kernel[(num_reqs, num_heads)](part_out, part_lse, out, num_heads, num_splits, RANK=rank,
                                               RANK_P=max(16, triton.next_power_of_2(rank)))
    return out


def mla_decode_reference(query: torch.Tensor, cache: torch.Tensor, block_table: torch.Tensor,
                         seq_lens: torch.Tensor, rank: int, scale: float) -> torch.Tensor:
    """The same in torch, one request at a time (float32 softmax)."""
    block_size = cache.shape[1]
    rows = cache.reshape(-1, cache.shape[-1])
    outs = []
    for b in range(query.shape[0]):
        n = int(seq_lens[b])
        slots = block_table[b, torch.arange(n) // block_size].long() * block_size + torch.arange(n) % block_size
        keys = rows[slots.to(rows.device)].float()  # [n, rank + rope]
        p = torch.softmax(query[b].float() @ keys.t() * scale, dim=-1)
        outs.append((p @ keys[:, :rank]).to(query.dtype))
    return torch.stack(outs)
