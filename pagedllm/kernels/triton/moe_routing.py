"""Mixture-of-experts routing on the GPU in one launch, a program per token: scores (softmax or
sigmoid), DeepSeek's group selection, top-k, renormalisation and scaling, as layers/moe_routing.py's
torch reference computes them (the tests hold the kernel to it). Replaces five to a dozen small
torch launches per MoE layer, each a few microseconds of a batch-1 decode step.

Top-k is k rounds of argmax (ties to the lower expert id) over the experts still in the running;
groups are ranked the same way, with a group's score its best (softmax) or best-two-sum (with a
correction bias) member.
"""
from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl


@triton.jit
def _route_kernel(logits_ptr, bias_ptr, weights_ptr, ids_ptr, num_experts, stride, scaling,
                  TOP_K: tl.constexpr, K_P: tl.constexpr, E_P: tl.constexpr, SIGMOID: tl.constexpr,
                  HAS_BIAS: tl.constexpr, RENORM: tl.constexpr, GROUPS: tl.constexpr, TOPK_GROUPS: tl.constexpr):
    t = tl.program_id(0)
    e = tl.arange(0, E_P)
    valid = e < num_experts
    x = tl.load(logits_ptr + t * stride + e, mask=valid, other=float("-inf")).to(tl.float32)
    if SIGMOID:
        scores = 1.0 / (1.0 + tl.exp(-x))
    else:
        p = tl.exp(x - tl.max(x, 0))
        scores = p / tl.sum(p, 0)
    scores = tl.where(valid, scores, 0.0)
    choice = scores
    if HAS_BIAS:
        choice = scores + tl.load(bias_ptr + e, mask=valid, other=0.0).to(tl.float32)
    choice = tl.where(valid, choice, float("-inf"))
    if GROUPS > 1:
        group_size = num_experts // GROUPS
        group = e // group_size
        g = tl.arange(0, GROUPS)
        group_scores = tl.full((GROUPS,), float("-inf"), tl.float32)
        for i in tl.static_range(GROUPS):
            member = tl.where(valid & (group == i), choice, float("-inf"))
            best = tl.max(member, 0)
            score = best
            if HAS_BIAS:  # plus the second best: the best's first position taken out
                first = tl.min(tl.where(member == best, e, E_P), 0)
                score = best + tl.max(tl.where(e == first, float("-inf"), member), 0)
            group_scores = tl.where(g == i, score, group_scores)
        keep = tl.zeros((E_P,), tl.int1)
        for _ in tl.static_range(TOPK_GROUPS):
            best = tl.max(group_scores, 0)
            pick = tl.min(tl.where(group_scores == best, g, GROUPS), 0)
            keep = keep | (group == pick)
            group_scores = tl.where(g == pick, float("-inf"), group_scores)
        choice = tl.where(keep, choice, float("-inf"))
    k = tl.arange(0, K_P)
    weights = tl.zeros((K_P,), tl.float32)
    ids = tl.zeros((K_P,), tl.int64)
    for i in tl.static_range(TOP_K):
        best = tl.max(choice, 0)
        pick = tl.min(tl.where(choice == best, e, E_P), 0)
        weights = tl.where(k == i, tl.sum(tl.where(e == pick, scores, 0.0), 0), weights)
        ids = tl.where(k == i, pick.to(tl.int64), ids)
        choice = tl.where(e == pick, float("-inf"), choice)
    if RENORM:
        weights = weights / (tl.sum(weights, 0) + 1e-20)
    tl.store(weights_ptr + t * TOP_K + k, weights * scaling, mask=k < TOP_K)
    tl.store(ids_ptr + t * TOP_K + k, ids, mask=k < TOP_K)


def route_kernel(router_logits: torch.Tensor, spec: Any,
                 correction_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits [T, E] -> (topk_weights [T, k] float32, topk_ids [T, k] int64); `spec`: a
    layers/moe_routing.RoutingSpec (kernels import nothing from the layers)."""
    num_tokens, num_experts = router_logits.shape
    assert router_logits.stride(-1) == 1 and triton.next_power_of_2(spec.num_groups) == spec.num_groups
    weights = torch.empty(num_tokens, spec.top_k, dtype=torch.float32, device=router_logits.device)
    ids = torch.empty(num_tokens, spec.top_k, dtype=torch.int64, device=router_logits.device)
    if num_tokens == 0:
        return weights, ids
    _route_kernel[(num_tokens,)](
        router_logits, correction_bias if correction_bias is not None else router_logits, weights, ids, num_experts,
        router_logits.stride(0), spec.scaling, TOP_K=spec.top_k, K_P=triton.next_power_of_2(spec.top_k),
        E_P=triton.next_power_of_2(num_experts),
        SIGMOID=spec.scoring == "sigmoid", HAS_BIAS=correction_bias is not None, RENORM=spec.renormalize,
        GROUPS=spec.num_groups, TOPK_GROUPS=spec.topk_groups, num_warps=1,
    )
    return weights, ids
