"""Truncation of the (temperature-scaled) logits: top-k, top-p (nucleus) and min-p.

Each one turns the dropped tokens' logits into -inf in place. All three work through a per-row
threshold logit (drop `logits < threshold`) rather than a sort + scatter back, so tokens tied
with the last kept one are kept too, and top-k needs only `topk`, not a full sort.
"""
from __future__ import annotations

import math

import torch

_NEG_INF = -math.inf
# top-p first sorts this many tokens per row (see _top_p_threshold_partial_sort)
_TOP_P_FIRST_K = 256


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
        top_logits = sub.topk(max_top_k, dim=-1).values  # [R, K] descending; the rest are -inf
        threshold, _ = _top_p_threshold(top_logits, top_logits.logsumexp(dim=-1, keepdim=True), top_p)
    else:
        threshold = _top_p_threshold_partial_sort(sub, top_p)
    sub.masked_fill_(sub < threshold, _NEG_INF)
    if not all_rows:
        logits[rows] = sub


def _top_p_threshold_partial_sort(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Top-p threshold [R, 1] of logits [R, V], sorting only the top _TOP_P_FIRST_K tokens of each
    row and the whole row only where those do not reach top_p. A full sort of a 49k vocab costs
    ~50x a topk(256), and model distributions put their top_p mass in far fewer tokens."""
    k = min(_TOP_P_FIRST_K, logits.shape[-1])
    log_norm = logits.logsumexp(dim=-1, keepdim=True)  # [R, 1] the full softmax's normaliser
    if logits.is_cuda:
        # Deciding which rows need the full sort would make the host wait for the GPU; a GPU
        # sorts every row of a 128k vocabulary in about a millisecond, so sort them all.
        return _top_p_threshold(logits.sort(dim=-1, descending=True).values, log_norm, top_p)[0]
    threshold, resolved = _top_p_threshold(logits.topk(k, dim=-1).values, log_norm, top_p)
    if k < logits.shape[-1] and not bool(resolved.all()):
        rest = (~resolved).nonzero().squeeze(1)  # [R'] rows whose kept set goes beyond k tokens
        sorted_logits = logits[rest].sort(dim=-1, descending=True).values  # [R', V]
        threshold[rest] = _top_p_threshold(sorted_logits, log_norm[rest], top_p[rest])[0]
    return threshold


def _top_p_threshold(sorted_logits: torch.Tensor, log_norm: torch.Tensor,
                     top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From the K largest logits of each row (descending) [R, K] and the log of the softmax
    normaliser [R, 1]: the top-p threshold logit [R, 1], and [R] whether it is final, i.e. the
    kept set ends within these K tokens (always so when K covers every finite logit)."""
    probs = (sorted_logits - log_norm).exp()  # [R, K]
    cumulative = probs.cumsum(dim=-1)  # [R, K]
    # Token j (descending) is kept iff the tokens before it sum to less than top_p; the first one
    # always is. cumulative is non-decreasing, so the kept ones are a prefix of this length:
    p = top_p.unsqueeze(1)  # [R, 1]
    num_kept = (cumulative[:, :-1] < p).sum(dim=-1) + 1  # [R]
    threshold = sorted_logits.gather(1, (num_kept - 1).unsqueeze(1))  # [R, 1]
    return threshold, cumulative[:, -1] >= top_p


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> None:
    """Drop tokens whose probability is below min_p times the top token's. logits [N, V], min_p [N].

    p_i < min_p * p_max  <=>  logit_i < logit_max + log(min_p), so no softmax is needed
    (min_p 0 gives a -inf threshold: nothing dropped).
    """
    max_logit = logits.max(dim=-1, keepdim=True).values  # [N, 1]
    threshold = max_logit + min_p.log().unsqueeze(1)  # [N, 1]
    logits.masked_fill_(logits < threshold, _NEG_INF)
