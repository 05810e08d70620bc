"""Paged attention for a flattened mixed batch, with a split-K (flash-decoding) path for decode.

One kernel does both shapes of work. A program owns a tile of BLOCK_M query rows of one request
and one kv head: BLOCK_Q consecutive new tokens x the GROUP q heads that share the kv head, so
each K/V tile is loaded once for all of its q heads (GQA) and both products run on tensor cores:

    row r of the tile  ->  token  q_start + tile_q * BLOCK_Q + r // GROUP,
                           q head kv_head * GROUP + r % GROUP

It walks the request's context in tiles of TILE_N keys, finding each key's cache block through
the block table (so any power-of-two block_size works), with an online softmax in base 2.
Keys are causal within the new tokens: the request's cached prefix is seq_len - q_len tokens and
a new token at position p sees keys 0..p.

Mixed batches (DECODE_ONLY=False): program -> (request, query tile) without a host sync. Request
i's tiles are numbered from query_start_loc[i] // BLOCK_Q + i on, which never overlaps request
i+1's and bounds the grid by num_tokens // BLOCK_Q + num_reqs; a program finds its request by a
binary search over query_start_loc and exits if its tile is past the request's tokens.

Decode-only steps (DECODE_ONLY=True): one token per request, so program i is request i. With
SPLIT, the request's key tiles are cut into at most num_splits even ranges of at least
MIN_SPLIT_TILES tiles (1 or 2, by batch size) (per request, from its own seq_len, so a fixed num_splits serves any
length: what a captured CUDA graph needs). A request whose keys make one range is done by split 0
alone, like the unsplit path. Otherwise each active split writes its normalised partial output and
log-sum-exp to a workspace and counts itself in an atomic counter per (request, kv head); the
split that counts last combines them, out = sum_s 2^(lse_s - max) * out_s / sum_s 2^(lse_s - max),
and resets the counter for the next launch. One launch per layer instead of two: at batch 1 the
second launch cost about as much as the attention itself.

Decode steps with ROTARY (the backend's forward_with_rotary) get q and the new k unrotated: each
program rotates its q rows in registers (after Qwen3's per-head norm with QK_NORM), and the split
that reads the last key tile first writes the new token's rotated k and its v to the cache, with a
barrier before its own loads. That replaces the rotary + cache-write launch before attention.
With NORM_SCALED (a model whose input RMSNorm weight is folded into the qkv projection, so q, k
and v come from the un-normalised hidden state h), q, k and v are first multiplied by the token's
1 / rms(h), each rounded to its dtype as a materialised tensor would be
(kernels/triton/norm_scale.py): the norm launch before the qkv projection is gone.

Padded requests are harmless: seq_len 0 reads nothing and writes zeros; every key past seq_len is
masked and loaded as 0, so poisoned (NaN) cache slots never reach the output.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagedllm.kernels.triton.cache_store import to_cache

_LOG2E = 1.4426950408889634

def _min_split_tiles(num_reqs: int) -> int:
    """Key tiles a split takes at least (shorter contexts use fewer splits): at batch 1 or 2 a
    one-tile split keeps short contexts fast, from batch 4 two tiles amortise a split's fixed
    cost better (the sweep in RESULTS.md)."""
    return 1 if num_reqs <= 2 else 2


@dataclass
class SplitWorkspace:
    """Scratch of the split-K path, reused by every layer (they run one after another)."""

    part_out: torch.Tensor  # [rows, num_heads, head_size] float32: rows >= num_reqs * num_splits
    part_lse: torch.Tensor  # [rows, num_heads] float32, base 2
    counters: torch.Tensor  # [>= num_reqs * num_kv_heads] int32, zero between launches

    @classmethod
    def allocate(cls, rows: int, num_heads: int, head_size: int, device: torch.device) -> SplitWorkspace:
        return cls(torch.empty(rows, num_heads, head_size, dtype=torch.float32, device=device),
                   torch.empty(rows, num_heads, dtype=torch.float32, device=device),
                   torch.zeros(rows * num_heads, dtype=torch.int32, device=device))


@dataclass
class NewKV:
    """A decode step's new tokens, for attention that rotates q and writes the cache itself."""

    key: torch.Tensor  # [num_tokens, num_kv_heads * head_size], unrotated, last dim contiguous
    value: torch.Tensor  # [num_tokens, num_kv_heads * head_size]
    positions: torch.Tensor  # [num_tokens] int64
    cos_sin_cache: torch.Tensor  # [max_position, rotary_dim] float32
    slot_mapping: torch.Tensor  # [num_tokens] int64; < 0: not written
    qk_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None  # (q weight, k weight, eps)
    # (h [num_tokens, hidden], eps): q, k and v are first scaled by 1 / rms(h) of their token
    norm_scale: tuple[torch.Tensor, float] | None = None


@triton.jit
def _find_request(query_start_loc_ptr, num_reqs, tile, BLOCK_Q: tl.constexpr):
    """The request owning query tile `tile`: the last i with qsl[i] // BLOCK_Q + i <= tile."""
    lo = 0
    hi = num_reqs
    while lo < hi:
        mid = (lo + hi) // 2
        first_tile = tl.load(query_start_loc_ptr + mid) // BLOCK_Q + mid
        if first_tile <= tile:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def _attend_tiles(
    acc, m, l,  # [BLOCK_M, HEAD_PAD], [BLOCK_M], [BLOCK_M] float32: online-softmax state
    q,  # [BLOCK_M, HEAD_PAD]
    k_cache_ptr, v_cache_ptr, bt_row,  # bt_row: this request's block-table row
    kv_base,  # [HEAD_PAD]: kv head offset + dims
    dim_ok, row_pos, kv_len, tile_lo, tile_hi, scale_log2, stride_c_block, stride_c_tok,
    BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr, MASKED: tl.constexpr, IEEE: tl.constexpr,
):
    """Fold key tiles [tile_lo, tile_hi) into (acc, m, l). MASKED: keys may be past kv_len or
    after a row's position; otherwise every key of every tile is visible to every row."""
    for t in range(tile_lo, tile_hi):
        kpos = t * TILE_N + tl.arange(0, TILE_N)
        if MASKED:
            key_ok = kpos < kv_len
            block = tl.load(bt_row + kpos // BLOCK_SIZE, mask=key_ok, other=0).to(tl.int64)
        else:
            block = tl.load(bt_row + kpos // BLOCK_SIZE).to(tl.int64)
        kv_ptrs = (block * stride_c_block + (kpos % BLOCK_SIZE) * stride_c_tok)[:, None] + kv_base[None, :]
        if MASKED:
            # other=0: slots past the length may hold NaN, and 0 * NaN would poison the P @ V sum.
            kv_mask = key_ok[:, None] & dim_ok[None, :]
            k = tl.load(k_cache_ptr + kv_ptrs, mask=kv_mask, other=0.0)
            v = tl.load(v_cache_ptr + kv_ptrs, mask=kv_mask, other=0.0)
        else:
            k = tl.load(k_cache_ptr + kv_ptrs, mask=dim_ok[None, :], other=0.0)
            v = tl.load(v_cache_ptr + kv_ptrs, mask=dim_ok[None, :], other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k.to(q.dtype)))
        s = s * scale_log2
        if MASKED:
            s = tl.where((kpos[None, :] <= row_pos[:, None]) & key_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        # A row with nothing visible yet keeps m = -inf; subtract 0 there instead of -inf - -inf.
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l = l * alpha + tl.sum(p, 1)
        if IEEE:
            pv = tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision="ieee")
        else:
            pv = tl.dot(p.to(q.dtype), v.to(q.dtype))
        acc = acc * alpha[:, None] + pv
        m = m_new
    return acc, m, l


@triton.jit
def _rotation(cos_sin_ptr, pos, stride_cs, dims, x_ptr, HALF: tl.constexpr):
    """Neox rotary as an elementwise op over a whole head: x' = x * cos + sign * x[partner] * sin,
    partner = the other half's dim, sign -1 on the first half; dims past the rotated ones keep
    cos 1, sin 0. cos/sin rounded to the activations' dtype first, as rotary.py does."""
    rotated = dims < 2 * HALF
    first = dims < HALF
    partner = tl.where(rotated, tl.where(first, dims + HALF, dims - HALF), dims)
    sign = tl.where(first, -1.0, 1.0)
    freq = tl.where(first, dims, dims - HALF)
    cs = cos_sin_ptr + pos * stride_cs + freq
    cos = tl.load(cs, mask=rotated, other=1.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    sin = tl.load(cs + HALF, mask=rotated, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    return partner, sign, cos, sin


@triton.jit
def _inv_rms(row_ptr, eps, HIDDEN: tl.constexpr, BLOCK: tl.constexpr):
    """1 / sqrt(mean(row^2) + eps) of one row of HIDDEN values, in float32."""
    cols = tl.arange(0, BLOCK)
    h = tl.load(row_ptr + cols, mask=cols < HIDDEN, other=0.0).to(tl.float32)
    return tl.rsqrt(tl.sum(h * h, 0) / HIDDEN + eps)


@triton.jit
def _scaled(x, inv, SCALED: tl.constexpr):
    """x * inv rounded to x's dtype with SCALED, else x."""
    if SCALED:
        x = (x.to(tl.float32) * inv).to(x.dtype)
    return x


@triton.jit
def _normalize(x, x_partner, dims, partner, norm_w_ptr, eps, HEAD_SIZE: tl.constexpr):
    """Qwen3's per-head RMSNorm of rows x [R, D] (and of the same rows permuted to `partner`), in
    the torch path's roundings: normalise in float32, round, scale by the weight, round."""
    dtype = x.dtype
    xf = x.to(tl.float32)
    inv = tl.rsqrt(tl.sum(xf * xf, 1) / HEAD_SIZE + eps)[:, None]
    w = tl.load(norm_w_ptr + dims, mask=dims < HEAD_SIZE, other=0.0).to(tl.float32)
    w_p = tl.load(norm_w_ptr + partner, mask=partner < HEAD_SIZE, other=0.0).to(tl.float32)
    x = (w[None, :] * (xf * inv).to(dtype).to(tl.float32)).to(dtype)
    x_partner = (w_p[None, :] * (x_partner.to(tl.float32) * inv).to(dtype).to(tl.float32)).to(dtype)
    return x, x_partner


@triton.jit
def _rotate_rows(x, x_partner, dims, partner, sign, cos, sin, norm_w_ptr, eps,
                 HEAD_SIZE: tl.constexpr, QK_NORM: tl.constexpr):
    """Rows x [R, D] rotated (after the per-head norm with QK_NORM), rounded to their dtype."""
    if QK_NORM:
        x, x_partner = _normalize(x, x_partner, dims, partner, norm_w_ptr, eps, HEAD_SIZE)
    out = x.to(tl.float32) * cos[None, :] + sign[None, :] * x_partner.to(tl.float32) * sin[None, :]
    return out.to(x.dtype)


@triton.jit
def _write_new_kv(k_row_ptr, v_row_ptr, k_cache_ptr, v_cache_ptr, slot, stride_c_block, stride_c_tok, head_off,
                  dims, dim_ok, partner, sign, cos, sin, k_norm_ptr, eps, inv_rms, k_inv, v_inv,
                  HEAD_SIZE: tl.constexpr, BLOCK_SIZE: tl.constexpr, QK_NORM: tl.constexpr,
                  NORM_SCALED: tl.constexpr, KV_SCALED: tl.constexpr):
    """One kv head of the new token: k rotated (normalised first with QK_NORM), and v, into the
    cache at `slot`; both scaled by inv_rms first with NORM_SCALED, and divided by an fp8 cache's
    scales (KV_SCALED) as they are stored."""
    k = _scaled(tl.load(k_row_ptr + dims, mask=dim_ok, other=0.0)[None, :], inv_rms, NORM_SCALED)
    k_partner = _scaled(tl.load(k_row_ptr + partner, mask=dim_ok, other=0.0)[None, :], inv_rms, NORM_SCALED)
    k = _rotate_rows(k, k_partner, dims, partner, sign, cos, sin, k_norm_ptr, eps, HEAD_SIZE, QK_NORM)
    v = _scaled(tl.load(v_row_ptr + dims, mask=dim_ok, other=0.0), inv_rms, NORM_SCALED)
    if KV_SCALED:
        k = k.to(tl.float32) * k_inv
        v = v.to(tl.float32) * v_inv
    row = (slot // BLOCK_SIZE) * stride_c_block + (slot % BLOCK_SIZE) * stride_c_tok + head_off
    tl.store(k_cache_ptr + row + dims[None, :], to_cache(k, k_cache_ptr), mask=dim_ok[None, :])
    tl.store(v_cache_ptr + row + dims, to_cache(v, v_cache_ptr), mask=dim_ok)


@triton.jit
def _paged_attention_kernel(
    out_ptr,  # [num_tokens, num_heads, head_size]
    part_out_ptr,  # [num_reqs * num_splits, num_heads, head_size] float32 (SPLIT only)
    part_lse_ptr,  # [num_reqs * num_splits, num_heads] float32, base-2 (SPLIT only)
    counter_ptr,  # [num_reqs * num_kv_heads] int32, zeros (SPLIT only)
    q_ptr,  # [num_tokens, num_heads, head_size]
    k_cache_ptr, v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_size]
    block_table_ptr,  # [num_reqs, max_blocks] int32
    seq_lens_ptr,  # [num_reqs] int32
    query_start_loc_ptr,  # [num_reqs + 1] int32
    k_new_ptr, v_new_ptr,  # [num_tokens, num_kv_heads * head_size] each, rows strided (ROTARY only)
    positions_ptr, cos_sin_ptr, slot_ptr,  # [num_tokens], [max_position, rot] float32, [num_tokens]
    q_norm_ptr, k_norm_ptr,  # [head_size] each (QK_NORM only)
    norm_src_ptr, stride_ns, norm_eps,  # h [num_tokens, NORM_H] (NORM_SCALED only)
    num_reqs, num_splits, scale_log2,
    k_inv, v_inv, v_scale,  # an fp8 cache's scales (KV_SCALED): its K, V are the real ones divided by them
    stride_q_tok, stride_q_head, stride_o_tok, stride_o_head,
    stride_c_block, stride_c_tok, stride_c_head, stride_bt, stride_kn, stride_vn, stride_cs, eps,
    GROUP: tl.constexpr, HEAD_SIZE: tl.constexpr, HEAD_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr, TILE_N: tl.constexpr,
    DECODE_ONLY: tl.constexpr, SPLIT: tl.constexpr, IEEE: tl.constexpr, MIN_SPLIT_TILES: tl.constexpr,
    ROTARY: tl.constexpr, HALF: tl.constexpr, QK_NORM: tl.constexpr,
    NORM_SCALED: tl.constexpr, NORM_H: tl.constexpr, NORM_BLOCK: tl.constexpr, PDL: tl.constexpr,
    KV_SCALED: tl.constexpr,
):
    if PDL:  # the next kernel may launch now: it reads nothing of ours before its own wait
        tl.extra.cuda.gdc_launch_dependents()
    tile = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    if DECODE_ONLY:
        req = tile
        q_start = tile
        q_len = 1
        tile_q = 0
    else:
        req = _find_request(query_start_loc_ptr, num_reqs, tile, BLOCK_Q)
        q_start = tl.load(query_start_loc_ptr + req)
        q_len = tl.load(query_start_loc_ptr + req + 1) - q_start
        tile_q = tile - (q_start // BLOCK_Q + req)
        if tile_q * BLOCK_Q >= q_len:
            return
    seq_len = tl.load(seq_lens_ptr + req)
    num_cached = seq_len - q_len

    # Keys this tile needs end at its last token's position.
    kv_len = tl.minimum(num_cached + (tile_q + 1) * BLOCK_Q, seq_len)
    num_tiles = tl.cdiv(kv_len, TILE_N)
    tile_lo = 0
    tile_hi = num_tiles
    num_active = 1
    if SPLIT:  # idle splits (short contexts) leave before loading anything
        per_split = tl.maximum(tl.cdiv(num_tiles, num_splits), MIN_SPLIT_TILES)
        num_active = tl.cdiv(num_tiles, per_split)  # 0 for padding (seq_len 0): split 0 writes zeros
        if split >= tl.maximum(num_active, 1):
            return
        tile_lo = split * per_split
        tile_hi = tl.minimum(tile_lo + per_split, num_tiles)

    rows = tl.arange(0, BLOCK_M)
    row_tok = tile_q * BLOCK_Q + rows // GROUP  # index among the request's new tokens
    row_head = kv_head * GROUP + rows % GROUP
    row_ok = (rows < BLOCK_Q * GROUP) & (row_tok < q_len)
    row_pos = num_cached + row_tok  # absolute position: sees keys 0..row_pos
    dims = tl.arange(0, HEAD_PAD)
    dim_ok = dims < HEAD_SIZE
    q_rows = (q_start + row_tok).to(tl.int64) * stride_q_tok + row_head * stride_q_head
    if PDL:  # q, k, v and h come from the kernels before; the metadata above from the host
        tl.extra.cuda.gdc_wait()
    q = tl.load(q_ptr + q_rows[:, None] + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    if ROTARY:  # decode only: rotate (and normalise) q here, in registers, instead of in a kernel before
        pos = tl.load(positions_ptr + q_start).to(tl.int64)
        partner, sign, cos, sin = _rotation(cos_sin_ptr, pos, stride_cs, dims, q_ptr, HALF)
        q_partner = tl.load(q_ptr + q_rows[:, None] + partner[None, :], mask=row_ok[:, None] & dim_ok[None, :],
                            other=0.0)
        inv_rms = 1.0
        if NORM_SCALED:
            inv_rms = _inv_rms(norm_src_ptr + q_start.to(tl.int64) * stride_ns, norm_eps, NORM_H, NORM_BLOCK)
            q = _scaled(q, inv_rms, True)
            q_partner = _scaled(q_partner, inv_rms, True)
        q = _rotate_rows(q, q_partner, dims, partner, sign, cos, sin, q_norm_ptr, eps, HEAD_SIZE, QK_NORM)

    if ROTARY:
        # The new token's K/V go to the cache here. Only the split that reads the last key tile
        # (where the new token is) writes them, and the barrier makes them visible to its own
        # loads below; no other program reads that slot.
        if tile_hi == num_tiles:
            slot = tl.load(slot_ptr + q_start)
            if slot >= 0:
                _write_new_kv(k_new_ptr + q_start.to(tl.int64) * stride_kn + kv_head * HEAD_SIZE,
                              v_new_ptr + q_start.to(tl.int64) * stride_vn + kv_head * HEAD_SIZE,
                              k_cache_ptr, v_cache_ptr, slot, stride_c_block, stride_c_tok, kv_head * stride_c_head,
                              dims, dim_ok, partner, sign, cos, sin, k_norm_ptr, eps, inv_rms, k_inv, v_inv,
                              HEAD_SIZE, BLOCK_SIZE, QK_NORM, NORM_SCALED, KV_SCALED)
        tl.debug_barrier()

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_PAD], tl.float32)
    bt_row = block_table_ptr + req.to(tl.int64) * stride_bt
    kv_base = kv_head * stride_c_head + dims
    # Tiles every row sees whole (all keys <= the first row's position) skip the masks; only the
    # tiles on the causal diagonal and the last partial tile pay for them.
    num_full = (num_cached + tile_q * BLOCK_Q + 1) // TILE_N
    acc, m, l = _attend_tiles(acc, m, l, q, k_cache_ptr, v_cache_ptr, bt_row, kv_base, dim_ok, row_pos, kv_len,
                              tile_lo, tl.minimum(tile_hi, num_full), scale_log2, stride_c_block, stride_c_tok,
                              BLOCK_SIZE, TILE_N, False, IEEE)
    acc, m, l = _attend_tiles(acc, m, l, q, k_cache_ptr, v_cache_ptr, bt_row, kv_base, dim_ok, row_pos, kv_len,
                              tl.maximum(tile_lo, num_full), tile_hi, scale_log2, stride_c_block, stride_c_tok,
                              BLOCK_SIZE, TILE_N, True, IEEE)

    has_keys = l > 0.0
    acc = acc / tl.where(has_keys, l, 1.0)[:, None]  # a row with no keys (padding) writes zeros
    if KV_SCALED:  # the cached V's scale (the K scale is in scale_log2); splits combine linearly
        acc = acc * v_scale
    store_mask = row_ok[:, None] & dim_ok[None, :]
    o_rows = (q_start + row_tok).to(tl.int64) * stride_o_tok + row_head * stride_o_head
    o_ptrs = out_ptr + o_rows[:, None] + dims[None, :]
    if SPLIT:
        if num_active > 1:
            num_heads = GROUP * tl.num_programs(1)
            part = (req * num_splits + split).to(tl.int64) * num_heads
            lse = tl.where(has_keys, m + tl.log2(tl.where(has_keys, l, 1.0)), float("-inf"))
            tl.store(part_lse_ptr + part + row_head, lse, mask=row_ok)
            tl.store(part_out_ptr + (part + row_head)[:, None] * HEAD_SIZE + dims[None, :], acc, mask=store_mask)
            # Every thread's stores come before the count (barrier, then a release at GPU scope);
            # the last to count sees all partials (acquire, and loads that skip the non-coherent L1).
            tl.debug_barrier()
            counter = counter_ptr + req * tl.num_programs(1) + kv_head
            if tl.atomic_add(counter, 1, sem="acq_rel") == num_active - 1:
                tl.atomic_xchg(counter, 0)
                acc = _combine_splits(part_out_ptr, part_lse_ptr, (req * num_splits).to(tl.int64) * num_heads,
                                      num_heads, row_head, row_ok, dims, dim_ok, num_active,
                                      BLOCK_M, HEAD_SIZE, HEAD_PAD)
                tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=store_mask)
        else:
            tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=store_mask)
    else:
        tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=store_mask)


@triton.jit
def _combine_splits(part_out_ptr, part_lse_ptr, first_part, num_heads, row_head, row_ok, dims, dim_ok, num_active,
                    BLOCK_M: tl.constexpr, HEAD_SIZE: tl.constexpr, HEAD_PAD: tl.constexpr):
    """sum_s 2^(lse_s - M) out_s / sum_s 2^(lse_s - M) over the request's active splits, per row."""
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_PAD], tl.float32)
    for s in range(0, num_active):
        part = first_part + s * num_heads + row_head  # [BLOCK_M]
        lse = tl.load(part_lse_ptr + part, mask=row_ok, other=float("-inf"), cache_modifier=".cg")
        o = tl.load(part_out_ptr + part[:, None] * HEAD_SIZE + dims[None, :],
                    mask=row_ok[:, None] & dim_ok[None, :], other=0.0, cache_modifier=".cg")
        m_new = tl.maximum(m, lse)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no keys so far
        alpha = tl.exp2(m - m_ref)
        w = tl.exp2(lse - m_ref)
        acc = acc * alpha[:, None] + o * w[:, None]
        total = total * alpha + w
        m = m_new
    return acc / tl.where(total > 0.0, total, 1.0)[:, None]


def _tile_shape(group: int, head_pad: int, decode_only: bool) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_Q, TILE_N). Decode tiles hold one token (GROUP rows padded to the 16 a
    tensor-core product needs); mixed tiles hold 64 rows, as many whole tokens as fit."""
    block_m = max(16, triton.next_power_of_2(group)) if decode_only else max(64, triton.next_power_of_2(group))
    block_q = 1 if decode_only else block_m // group
    tile_n = 64 if head_pad <= 128 else 32  # keeps K, V and the score tile in registers/smem
    return block_m, block_q, tile_n


def paged_attention(
    out: torch.Tensor,  # [>= num_tokens, num_heads, head_size], written for the first num_tokens
    query: torch.Tensor,  # [>= num_tokens, num_heads, head_size]
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_size]
    block_table: torch.Tensor,  # [>= num_reqs, max_blocks] int32
    seq_lens: torch.Tensor,  # [>= num_reqs] int32
    query_start_loc: torch.Tensor,  # [num_reqs + 1] int32
    num_tokens: int,
    num_reqs: int,
    scale: float,
    decode_only: bool,
    num_splits: int = 1,
    workspace: SplitWorkspace | None = None,
    *,
    block_m: int | None = None,
    tile_n: int | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
    min_split_tiles: int | None = None,
    new_kv: NewKV | None = None,
    pdl: bool = False,
    kv_scales: tuple[float, float] = (1.0, 1.0),
) -> None:
    """Attention of each token over its request's paged context, into `out`.

    decode_only: one token per request, token i belongs to request i (num_tokens == num_reqs).
    num_splits > 1 (decode only) takes the split-K path; `workspace` then holds the partials and
    the per-(request, kv head) counters.
    new_kv (decode only): the step's unrotated q (in `query`), k and v. The kernel then rotates q
    in registers and writes the rotated k and v to the cache itself: what
    rotary_embedding_and_cache_ would do in a launch before (q is not rotated in memory).
    The grid depends only on (num_tokens, num_reqs, num_splits), never on tensor values.
    pdl (decode only, CUDA): launched as a programmatic dependent of the kernel before (the step's
    metadata is read before griddepcontrol.wait, q/k/v after) and letting the next launch at once,
    so its weight loads overlap this attention (kernels/triton/skinny_gemm.py).
    block_m / tile_n / num_warps / num_stages / min_split_tiles override the launch shape
    (benchmarks sweep them). kv_scales (k_scale, v_scale): the cache holds K / k_scale and
    V / v_scale (an fp8 cache's calibrated scales), and the new K/V are written so.
    """
    if num_tokens == 0:
        return
    _, _, block_size, kv_heads, head_size = kv_cache.shape
    num_heads = query.shape[1]
    group = num_heads // kv_heads
    head_pad = max(16, triton.next_power_of_2(head_size))
    default_m, block_q, default_n = _tile_shape(group, head_pad, decode_only)
    if block_m is not None and not decode_only:
        block_q = max(1, block_m // group)
    block_m = max(block_m or default_m, triton.next_power_of_2(group))
    tile_n = tile_n or default_n
    split = decode_only and num_splits > 1
    assert query.stride(-1) == 1 and out.stride(-1) == 1 and kv_cache.stride(-1) == 1
    if split:
        assert workspace is not None and workspace.part_out.shape[0] >= num_reqs * num_splits
        assert workspace.counters.numel() >= num_reqs * kv_heads
        part_out, part_lse, counters = workspace.part_out, workspace.part_lse, workspace.counters
    else:
        part_out = part_lse = counters = out  # unused
    num_q_tiles = num_reqs if decode_only else num_tokens // block_q + num_reqs
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    grid = (num_q_tiles, kv_heads, num_splits if split else 1)
    assert new_kv is None or decode_only, "the new K/V are written in the kernel only for decode steps"
    assert not pdl or (decode_only and query.is_cuda)
    nk = new_kv if new_kv is not None else NewKV(query, query, seq_lens, query, seq_lens)  # unused
    q_norm, k_norm, eps = nk.qk_norm if nk.qk_norm is not None else (query, query, 0.0)
    norm_src, norm_eps = nk.norm_scale if nk.norm_scale is not None else (query, 0.0)
    norm_h = norm_src.shape[-1] if nk.norm_scale is not None else 1
    assert nk.norm_scale is None or (norm_src.dim() == 2 and norm_src.stride(-1) == 1)
    _paged_attention_kernel[grid](
        out, part_out, part_lse, counters, query, k_cache, v_cache, block_table, seq_lens, query_start_loc,
        nk.key, nk.value, nk.positions, nk.cos_sin_cache, nk.slot_mapping, q_norm, k_norm,
        norm_src, norm_src.stride(0), norm_eps,
        num_reqs, num_splits if split else 1, scale * kv_scales[0] * _LOG2E,
        1.0 / kv_scales[0], 1.0 / kv_scales[1], kv_scales[1],
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_table.stride(0),
        nk.key.stride(0), nk.value.stride(0), nk.cos_sin_cache.stride(0), eps,
        GROUP=group, HEAD_SIZE=head_size, HEAD_PAD=head_pad, BLOCK_SIZE=block_size,
        BLOCK_M=block_m, BLOCK_Q=block_q, TILE_N=tile_n,
        DECODE_ONLY=decode_only, SPLIT=split, IEEE=query.dtype == torch.float32,
        MIN_SPLIT_TILES=min_split_tiles or _min_split_tiles(num_reqs),
        ROTARY=new_kv is not None, HALF=nk.cos_sin_cache.shape[-1] // 2 if new_kv is not None else 1,
        QK_NORM=nk.qk_norm is not None, NORM_SCALED=nk.norm_scale is not None, NORM_H=norm_h,
        NORM_BLOCK=triton.next_power_of_2(norm_h), PDL=pdl, KV_SCALED=kv_scales != (1.0, 1.0),
        num_warps=num_warps, num_stages=num_stages,
        **({"launch_pdl": True} if pdl else {}),
    )
