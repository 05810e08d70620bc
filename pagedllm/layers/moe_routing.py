"""Routing of a mixture-of-experts layer: each token's top-k experts and their weights from the
router's logits, as the HF models compute them: softmax in float32, then top-k, then optionally
renormalised over the k (Mixtral, Qwen MoE); or DeepSeek's grouped top-k (select_grouped)."""
from __future__ import annotations

import torch


def select_experts(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits [T, E] -> (topk_weights [T, k] float32, topk_ids [T, k] int64)."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids


def select_grouped(router_logits: torch.Tensor, top_k: int, scoring: str, num_groups: int, topk_groups: int,
                   correction_bias: torch.Tensor | None, renormalize: bool,
                   scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek's routing, router_logits [T, E] float32 -> (topk_weights [T, k], topk_ids [T, k]).

    Scores are softmax(logits) (V2) or sigmoid(logits) (V3). With groups, experts are chosen only
    from the topk_groups of num_groups groups that score best: with a correction bias (V3's
    noaux_tc) a group scores the sum of its two best biased scores and the others are excluded at
    -inf; without one (V2's group_limited_greedy) its best score, the others zeroed. The weights are
    the chosen experts' unbiased scores, renormalised when asked (V3, + 1e-20), times scaling."""
    num_tokens, num_experts = router_logits.shape
    scores = router_logits.sigmoid() if scoring == "sigmoid" else router_logits.softmax(dim=-1, dtype=torch.float32)
    choice = scores + correction_bias if correction_bias is not None else scores
    if num_groups > 1:
        grouped = choice.view(num_tokens, num_groups, num_experts // num_groups)
        group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1) if correction_bias is not None else grouped.amax(-1)
        group_idx = torch.topk(group_scores, k=topk_groups, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        keep = group_mask.unsqueeze(-1).expand(-1, -1, num_experts // num_groups).reshape(num_tokens, -1).bool()
        choice = choice.masked_fill(~keep, float("-inf") if correction_bias is not None else 0.0)
    ids = torch.topk(choice, k=top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * scaling, ids
