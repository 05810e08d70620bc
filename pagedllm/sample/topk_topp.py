"""Truncation of the (temperature-scaled) logits: top-k, top-p (nucleus) and min-p.

Each one turns the dropped tokens' logits into -inf in place. All three work through a per-row
threshold logit (drop `logits < threshold`) rather than a sort + scatter back, so tokens tied
with the last kept one are kept too, and top-k needs only `topk`, not a full sort.
"""
from __future__ import annotations

import math

import torch

_NEG_INF = -math.inf


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor, max_top_k: int) -> None:
    """Keep the `top_k[i]` largest logits of row i (0: keep all). logits [N, V], top_k [N] int64."""
    no_top_k = top_k == 0  # [N]
    k = top_k.masked_fill(no_top_k, 1)  # [N]
    top_values = logits.topk(max_top_k, dim=-1).values  # [N, max_top_k], descending
    threshold = top_values.gather(1, (k - 1).unsqueeze(1))  # [N, 1] the k-th largest logit
    threshold.masked_fill_(no_top_k.unsqueeze(1), _NEG_INF)
    logits.masked_fill_(logits < threshold, _NEG_INF)


def apply_top_p(logits: torch.Tensor, rows: torch.Tensor, top_p: torch.Tensor, max_top_k: int | None) -> None:
    """Keep, in each of `rows`, the smallest set of most likely tokens whose probability reaches top_p.

    logits [N, V]; rows [R] int64; top_p [R]. `max_top_k`, when given, bounds how many tokens of
    those rows are still finite (top-k ran before), so only that many need sorting.
    """
    all_rows = rows.shape[0] == logits.shape[0]
    sub = logits if all_rows else logits[rows]  # [R, V]
    if max_top_k is not None:
        sorted_logits = sub.topk(max_top_k, dim=-1).values  # [R, K] descending; the rest are -inf
    else:
        sorted_logits = sub.sort(dim=-1, descending=True).values  # [R, V]
    probs = sorted_logits.softmax(dim=-1)
    cumulative = probs.cumsum(dim=-1)  # [R, K]
    # Token j (descending) is kept iff the tokens before it sum to less than top_p; the first one
    # always is. cumulative is non-decreasing, so the kept ones are a prefix of this length:
    num_kept = (cumulative[:, :-1] < top_p.unsqueeze(1)).sum(dim=-1) + 1  # [R]
    threshold = sorted_logits.gather(1, (num_kept - 1).unsqueeze(1))  # [R, 1]
    sub.masked_fill_(sub < threshold, _NEG_INF)
    if not all_rows:
        logits[rows] = sub


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> None:
    """Drop tokens whose probability is below min_p times the top token's. logits [N, V], min_p [N].

    p_i < min_p * p_max  <=>  logit_i < logit_max + log(min_p), so no softmax is needed
    (min_p 0 gives a -inf threshold: nothing dropped).
    """
    max_logit = logits.max(dim=-1, keepdim=True).values  # [N, 1]
    threshold = max_logit + min_p.log().unsqueeze(1)  # [N, 1]
    logits.masked_fill_(logits < threshold, _NEG_INF)
