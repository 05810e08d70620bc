"""Speculative decoding's rejection rule on the GPU in one launch (spec_decode/rejection.py is the
torch reference it is tested against): a program per drafted position.

    target_probs, draft_probs  [R, V] float32, last dim contiguous: p and q at each position
    draft_ids                  [R] int64: the drafts, sampled from q
    u_accept, u_recover        [R] float32 uniforms in [0, 1)
    returns accepted [R] bool (u * q(d) < p(d)) and recovered [R] int64: the first token whose
    running sum of max(0, p - q) passes u_recover * its total (of p where that total is 0)

Two passes over the row in blocks of BLOCK: the residual's total, then the running sum with a
carry across blocks, the first block where it passes the target giving the token. The torch
version makes [R, V] temporaries for the residual and its cumsum.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _load_block(p_ptr, q_ptr, base, start, V, BLOCK: tl.constexpr):
    """p and q of tokens start..start+BLOCK-1 of a row (0 past V), their offsets and mask."""
    offs = start + tl.arange(0, BLOCK)
    mask = offs < V
    p = tl.load(p_ptr + base + offs, mask=mask, other=0.0)
    q = tl.load(q_ptr + base + offs, mask=mask, other=0.0)
    return p, q, offs, mask


@triton.jit
def _rejection_kernel(p_ptr, q_ptr, ids_ptr, ua_ptr, ur_ptr, accepted_ptr, recovered_ptr, V,
                      BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * V
    d = tl.load(ids_ptr + row)
    p_d = tl.load(p_ptr + base + d)
    q_d = tl.load(q_ptr + base + d)
    tl.store(accepted_ptr + row, tl.load(ua_ptr + row) * q_d < p_d)
    total = 0.0
    total_p = 0.0
    for start in range(0, V, BLOCK):
        p, q, offs, mask = _load_block(p_ptr, q_ptr, base, start, V, BLOCK)
        total += tl.sum(tl.maximum(p - q, 0.0))
        total_p += tl.sum(p)
    use_p = total <= 0.0  # p == q: no residual; the row always accepts, draw from p to stay valid
    target = tl.load(ur_ptr + row) * tl.where(use_p, total_p, total)
    carry = 0.0
    found = V  # the answer; V while not found
    last_positive = 0
    for start in range(0, V, BLOCK):
        p, q, offs, mask = _load_block(p_ptr, q_ptr, base, start, V, BLOCK)
        w = tl.where(use_p, p, tl.maximum(p - q, 0.0))
        running = carry + tl.cumsum(w, axis=0)
        hit = (running > target) & (w > 0) & mask
        first = tl.min(tl.where(hit, offs, V), axis=0)
        found = tl.minimum(found, first)
        last_positive = tl.maximum(last_positive, tl.max(tl.where((w > 0) & mask, offs, 0), axis=0))
        carry += tl.sum(w, axis=0)
    # rounding may leave the running sum short of the target: the last token of positive weight
    tl.store(recovered_ptr + row, tl.where(found < V, found, last_positive).to(tl.int64))


def rejection_sample(target_probs: torch.Tensor, draft_probs: torch.Tensor, draft_ids: torch.Tensor,
                     u_accept: torch.Tensor, u_recover: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As spec_decode/rejection.py's, in one launch."""
    rows, vocab = target_probs.shape
    p, q = target_probs.contiguous(), draft_probs.contiguous()
    accepted = torch.empty(rows, dtype=torch.bool, device=p.device)
    recovered = torch.empty(rows, dtype=torch.int64, device=p.device)
    if rows:
        _rejection_kernel[(rows,)](p, q, draft_ids.contiguous(), u_accept.contiguous(), u_recover.contiguous(),
                                   accepted, recovered, vocab, BLOCK=BLOCK)
    return accepted, recovered
