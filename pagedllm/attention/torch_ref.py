"""Paged attention in plain torch: the CPU production path and the oracle for device kernels.

Two shapes of work, chosen per request by its query length:

* decode requests (one new token) are batched: their contexts are gathered through the block
  table into one padded [B, max_seq, kv_heads, D] tensor and a single SDPA call with a key-padding
  mask does them all;
* prefill requests (several new tokens, possibly after a cached prefix) get one SDPA call each,
  causal over the new tokens and seeing the whole cached prefix:

      keys     | cached context (seq_len - q) | new tokens (q)   |
      query i  | all visible                  | visible up to i  |
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pagedllm.attention.base import AttentionBackend, AttentionMetadata, QKVPrologue, effective_kv_scales
from pagedllm.kernels.reference import rms_norm_rows, rotary_neox, scale_rows_by_inv_rms


class TorchAttentionBackend(AttentionBackend):
    name = "torch"

    def forward(
        self,
        query: torch.Tensor,  # [num_tokens, num_heads, head_size]
        key: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        value: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_size]
        metadata: AttentionMetadata,
        scale: float,
        prologue: QKVPrologue | None = None,
        out: torch.Tensor | None = None,
        kv_scales: tuple[float, float] = (1.0, 1.0),
    ) -> torch.Tensor:
        if prologue is not None:  # a model planned for a fusing backend, run on this oracle
            query, key, value = apply_prologue(query, key, value, prologue)
        k_scale, v_scale = effective_kv_scales(kv_cache, kv_scales)
        if (k_scale, v_scale) != (1.0, 1.0):
            # in the cache's units: the scores take k_scale back through the softmax scale, and
            # the output v_scale (both linear)
            key, value, scale = key.float() * (1.0 / k_scale), value.float() * (1.0 / v_scale), scale * k_scale
            out = self.forward(query, key, value, kv_cache, metadata, scale, None, out)
            return out.mul_(v_scale)
        n = metadata.num_actual_tokens
        self.write_kv(key[:n], value[:n], kv_cache, metadata.slot_mapping[:n])
        if out is None:
            # Rows past num_actual_tokens are padding (e.g. for a captured graph): left as zeros.
            out = query.new_zeros(query.shape) if n < query.shape[0] else torch.empty_like(query)
        if metadata.is_decode_only:
            # One token per request, so n == num_reqs; slicing tolerates tables padded with extra rows.
            self.decode_only(query[:n], kv_cache, metadata, scale, out[:n])
        else:
            self.mixed(query[:n], key[:n], value[:n], kv_cache, metadata, scale, out[:n])
        return out

    def mixed(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
              metadata: AttentionMetadata, scale: float, out: torch.Tensor) -> None:
        """Attention of a step with prompt tokens (query [n, H, D], the step's actual tokens) into
        `out`, after this step's K/V are in the cache: decode rows batched, one SDPA per prompt.
        Device backends override this with a kernel."""
        qsl = metadata.query_start_loc_cpu
        decode_reqs = [i for i in range(metadata.num_reqs) if qsl[i + 1] - qsl[i] == 1]
        if decode_reqs:
            idx = torch.tensor(decode_reqs, dtype=torch.long, device=query.device)
            rows = torch.tensor([qsl[i] for i in decode_reqs], dtype=torch.long, device=query.device)
            plan = metadata.backend_cache.get("torch_mixed_decode")
            if plan is None:
                max_seq = max(metadata.seq_lens_cpu[i] for i in decode_reqs)
                plan = metadata.backend_cache["torch_mixed_decode"] = _decode_plan(
                    metadata.block_table[idx], metadata.seq_lens[idx], max_seq, metadata.block_size, query.dtype)
            out[rows] = _decode_attention(query[rows], kv_cache, plan, scale)
        for i in range(metadata.num_reqs):
            start, end = qsl[i], qsl[i + 1]
            if end - start > 1:
                out[start:end] = _prefill_attention(
                    query[start:end], key[start:end], value[start:end], kv_cache,
                    metadata.block_table[i], metadata.seq_lens_cpu[i], scale)

    def write_kv(self, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
        """This step's K/V into the cache; backends with a kernel for it override this."""
        write_kv_cache(key, value, kv_cache, slot_mapping)

    def decode_only(self, query: torch.Tensor, kv_cache: torch.Tensor, metadata: AttentionMetadata,
                    scale: float, out: torch.Tensor) -> None:
        """Attention of a decode-only step (query [B, H, D], one token per request) into `out`,
        after this step's K/V are in the cache. Device backends override this with a kernel."""
        n = query.shape[0]
        plan = metadata.backend_cache.get("torch_decode")
        if plan is None:
            plan = metadata.backend_cache["torch_decode"] = _decode_plan(
                metadata.block_table[:n], metadata.seq_lens[:n], metadata.max_seq_len,
                metadata.block_size, query.dtype)
        out.copy_(_decode_attention(query, kv_cache, plan, scale))


def write_kv_cache(
    key: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
    value: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_size]
    slot_mapping: torch.Tensor,  # [num_tokens] int64
) -> None:
    """Store each token's K/V at its slot (block_id * block_size + offset)."""
    _, num_blocks, block_size, kv_heads, head_size = kv_cache.shape
    slots = slot_mapping.long()
    # fp8 rows copied as their bytes: torch's index_copy_ has no fp8 kernel
    raw = _raw(kv_cache)
    for half, x in ((0, key), (1, value)):
        raw[half].view(num_blocks * block_size, kv_heads, head_size).index_copy_(0, slots,
                                                                              _raw(as_cached(x, kv_cache.dtype)))


def _raw(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.uint8) if x.dtype == torch.float8_e4m3fn else x


def as_cached(x: torch.Tensor, cache_dtype: torch.dtype) -> torch.Tensor:
    """x in the cache's element type, as the kernels store it: an fp8 (e4m3) cache saturates at
    +-448 (kernels/triton/cache_store.py)."""
    if cache_dtype == torch.float8_e4m3fn:
        return x.float().clamp(-448.0, 448.0).to(cache_dtype)
    return x.to(cache_dtype)


def gather_kv(
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_size]
    block_table: torch.Tensor,  # [B, max_blocks]
    seq_lens: torch.Tensor | None,  # [B]: zero K/V past each length; None: all valid up to max_seq_len
    max_seq_len: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of the first max_seq_len positions through the block table, [B, max_seq_len, kv, D]
    each, as fresh tensors."""
    _, _, block_size, kv_heads, head_size = kv_cache.shape
    num_reqs = block_table.shape[0]
    num_blocks = -(-max_seq_len // block_size)
    padded_len = num_blocks * block_size
    # index_select over whole blocks: ~2x faster on CPU than advanced indexing with a 2-D index.
    blocks = block_table[:, :num_blocks].reshape(-1).long()
    raw = _raw(kv_cache)  # fp8 as its bytes (0 is 0.0): torch's selects and fills have no fp8 kernels
    k = raw[0].index_select(0, blocks)  # [B * num_blocks, block_size, kv, D]
    v = raw[1].index_select(0, blocks)
    if seq_lens is not None:
        # Slots past a request's length hold whatever the cache had (uninitialized memory may be
        # NaN/inf in fp16) and a masked score still multiplies V (0 * NaN = NaN): zero those rows.
        stale = torch.arange(padded_len, device=k.device)[None, :] >= seq_lens[:, None]  # [B, padded_len]
        rows = stale.reshape(-1).nonzero().squeeze(1)
        k.view(-1, kv_heads, head_size).index_fill_(0, rows, 0)
        v.view(-1, kv_heads, head_size).index_fill_(0, rows, 0)
    k = k.view(kv_cache.dtype).view(num_reqs, padded_len, kv_heads, head_size)[:, :max_seq_len]
    v = v.view(kv_cache.dtype).view(num_reqs, padded_len, kv_heads, head_size)[:, :max_seq_len]
    return k, v


@dataclass
class _DecodePlan:
    """What every layer's decode attention shares within a step, built once per step."""

    blocks: torch.Tensor  # [B * num_blocks] int64, the block table rows flattened
    stale_rows: torch.Tensor | None  # gathered positions past each length, or None if there are none
    bias: torch.Tensor  # [B, 1, 1, max_seq_len] float: 0 where visible, -inf past the length
    num_blocks: int
    max_seq_len: int


def _decode_plan(block_table: torch.Tensor, seq_lens: torch.Tensor, max_seq_len: int, block_size: int,
                 dtype: torch.dtype) -> _DecodePlan:
    num_blocks = -(-max_seq_len // block_size)
    positions = torch.arange(num_blocks * block_size, device=seq_lens.device)
    stale = positions[None, :] >= seq_lens[:, None]  # [B, padded_len]
    rows = stale.reshape(-1).nonzero().squeeze(1)
    bias = torch.zeros(stale.shape, dtype=dtype, device=seq_lens.device).masked_fill_(stale, float("-inf"))
    return _DecodePlan(
        blocks=block_table[:, :num_blocks].reshape(-1).long(),
        stale_rows=rows if rows.numel() else None,
        bias=bias[:, None, None, :max_seq_len],
        num_blocks=num_blocks,
        max_seq_len=max_seq_len,
    )


def _decode_attention(
    query: torch.Tensor,  # [B, num_heads, head_size], one token per request
    kv_cache: torch.Tensor,
    plan: _DecodePlan,
    scale: float,
) -> torch.Tensor:  # [B, num_heads, head_size]
    num_reqs, num_heads, head_size = query.shape
    _, _, block_size, kv_heads, _ = kv_cache.shape
    padded_len = plan.num_blocks * block_size
    raw = _raw(kv_cache)  # fp8 as its bytes (0 is 0.0): torch's selects and fills have no fp8 kernels
    k = raw[0].index_select(0, plan.blocks).view(num_reqs * padded_len, kv_heads, head_size)
    v = raw[1].index_select(0, plan.blocks).view(num_reqs * padded_len, kv_heads, head_size)
    if plan.stale_rows is not None:
        # Slots past a length hold whatever the cache had (possibly NaN), and a zero attention
        # weight still multiplies V (0 * NaN = NaN): zero them in the gathered copy.
        k.index_fill_(0, plan.stale_rows, 0)
        v.index_fill_(0, plan.stale_rows, 0)
    k, v = k.view(kv_cache.dtype), v.view(kv_cache.dtype)
    # a cache narrower than the query (kv_cache_dtype bfloat16 under float32) is widened exactly
    k = k.view(num_reqs, padded_len, kv_heads, head_size)[:, : plan.max_seq_len].to(query.dtype)
    v = v.view(num_reqs, padded_len, kv_heads, head_size)[:, : plan.max_seq_len].to(query.dtype)
    # GQA without expanding K/V: the heads sharing a kv head become that kv head's "query rows"
    # (head h uses kv head h // group), so SDPA sees [B, kv, group, D] against [B, kv, S, D].
    q = query.view(num_reqs, kv_heads, num_heads // kv_heads, head_size)
    out = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=plan.bias,
                                         scale=scale)
    return out.reshape(num_reqs, num_heads, head_size)


def _prefill_attention(
    query: torch.Tensor,  # [q, num_heads, head_size]
    key: torch.Tensor,  # [q, kv_heads, head_size], the new tokens' keys
    value: torch.Tensor,  # [q, kv_heads, head_size]
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,  # [max_blocks] of this request
    seq_len: int,
    scale: float,
) -> torch.Tensor:  # [q, num_heads, head_size]
    num_new = query.shape[0]
    num_cached = seq_len - num_new
    q = query.transpose(0, 1)  # [H, q, D]
    if num_cached == 0:
        # No cached prefix: the new keys are the whole context, no gather needed; rounded as the
        # cache holds them (a narrower cache), so the prompt sees what later steps will read.
        k, v = (as_cached(x.transpose(0, 1), kv_cache.dtype).to(q.dtype) for x in (key, value))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
        return out.transpose(0, 1)
    k, v = gather_kv(kv_cache, block_table[None], None, seq_len)
    k, v = k[0].to(q.dtype), v[0].to(q.dtype)  # [S, kv, D]
    # SDPA's is_causal aligns the diagonal top-left; with a prefix it must end bottom-right.
    key_pos = torch.arange(seq_len, device=query.device)
    query_pos = torch.arange(num_cached, seq_len, device=query.device)
    mask = key_pos[None, :] <= query_pos[:, None]  # [q, S]
    out = F.scaled_dot_product_attention(q, k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, scale=scale,
                                         enable_gqa=True)
    return out.transpose(0, 1)


def apply_prologue(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   prologue: QKVPrologue) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a fusing backend does to q, k, v ([T, heads, head_size] each) before attention, in
    torch ops: the norm scale, then the q/k head norms, then the rotary embedding. New tensors.
    This backend declares no fusion (it would not pay), but takes a prologue anyway, so a model
    built for the Triton backend runs on this reference too."""
    num_tokens, _, head_size = query.shape
    if prologue.norm_scale is not None:
        query, key, value = (scale_rows_by_inv_rms(x, *prologue.norm_scale) for x in (query, key, value))
    if prologue.qk_norm is not None:
        q_weight, k_weight, eps = prologue.qk_norm
        query, key = rms_norm_rows(query, q_weight, eps), rms_norm_rows(key, k_weight, eps)
    rotated = (rotary_neox(prologue.positions, x.reshape(num_tokens, -1), prologue.cos_sin_cache, head_size)
               for x in (query, key))
    query, key = (x.view(num_tokens, -1, head_size) for x in rotated)
    return query, key, value
