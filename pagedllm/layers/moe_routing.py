"""Routing of a mixture-of-experts layer: each token's top-k experts and their weights from the
router's logits, as the HF models compute them. A RoutingSpec says which way; `route` is the torch
reference (the MoE method may run a kernel instead: kernels/triton/moe_routing.py).

    softmax, no groups     Mixtral, Qwen MoE (renormalised over the k when norm_topk_prob), DeepSeek-V2
    softmax, groups        DeepSeek-V2's group_limited_greedy: a group scores its best expert
    sigmoid + bias, groups DeepSeek-V3's noaux_tc: a group scores the sum of its two best biased
                           scores; experts are chosen by biased score, weighted by unbiased score

With groups, experts come only from the topk_groups best of num_groups groups. The weights are the
chosen experts' scores, renormalised when asked, times `scaling` (routed_scaling_factor).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RoutingSpec:
    top_k: int
    renormalize: bool = False
    scoring: str = "softmax"  # or "sigmoid"
    num_groups: int = 1
    topk_groups: int = 1
    scaling: float = 1.0


def route(router_logits: torch.Tensor, spec: RoutingSpec,
          correction_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits [T, E] -> (topk_weights [T, k] float32, topk_ids [T, k] int64)."""
    num_tokens, num_experts = router_logits.shape
    logits = router_logits.float()
    scores = logits.sigmoid() if spec.scoring == "sigmoid" else logits.softmax(dim=-1)
    choice = scores + correction_bias if correction_bias is not None else scores
    if spec.num_groups > 1:
        grouped = choice.view(num_tokens, spec.num_groups, num_experts // spec.num_groups)
        group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1) if correction_bias is not None else grouped.amax(-1)
        group_idx = torch.topk(group_scores, k=spec.topk_groups, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        keep = group_mask.unsqueeze(-1).expand(-1, -1, num_experts // spec.num_groups).reshape(num_tokens, -1)
        choice = choice.masked_fill(~keep.bool(), float("-inf"))
    ids = torch.topk(choice, k=spec.top_k, dim=-1)[1]
    weights = scores.gather(1, ids)
    if spec.renormalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * spec.scaling if spec.scaling != 1.0 else weights, ids
