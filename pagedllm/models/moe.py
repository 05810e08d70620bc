"""Mixture-of-experts MLPs (Mixtral, Qwen2-MoE, Qwen3-MoE): a router picks each token's top-k
experts, the experts run grouped (layers/fused_moe.py, through the platform's MoE method), and an
optional shared expert, gated per token by a sigmoid, runs on every token (Qwen2-MoE).

    out = sum_j w_j * expert_{e_j}(x)  [+ sigmoid(x . g) * shared(x)]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pagedllm.layers.fused_moe import FusedMoE
from pagedllm.layers.linear import Linear
from pagedllm.layers.moe_routing import RoutingSpec
from pagedllm.layers.norm import NormScale
from pagedllm.models.common import GatedMLP, MlpFactory


@dataclass(frozen=True)
class MoEOptions:
    num_experts: int
    top_k: int
    intermediate_size: int  # of one expert
    renormalize: bool  # the top-k weights renormalised to sum to 1 (Mixtral; norm_topk_prob)
    shared_intermediate_size: int = 0  # 0: no shared expert


class SparseMoeBlock(nn.Module):
    """HF's names: gate (the router), experts.<e>.{gate,up,down}_proj, shared_expert,
    shared_expert_gate."""

    def __init__(self, hidden_size: int, opts: MoEOptions, dtype: torch.dtype, prefix: str) -> None:
        super().__init__()
        self.routing = RoutingSpec(opts.top_k, opts.renormalize)
        self.gate = Linear(hidden_size, opts.num_experts, bias=False, dtype=dtype, prefix=f"{prefix}.gate",
                           quantizable=False)
        self.experts = FusedMoE(opts.num_experts, hidden_size, opts.intermediate_size, dtype,
                                prefix=f"{prefix}.experts")
        self.shared_expert: GatedMLP | None = None
        if opts.shared_intermediate_size:
            self.shared_expert = GatedMLP(hidden_size, opts.shared_intermediate_size, False, dtype,
                                          prefix=f"{prefix}.shared_expert")
            self.shared_expert_gate = Linear(hidden_size, 1, bias=False, dtype=dtype,
                                             prefix=f"{prefix}.shared_expert_gate", quantizable=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor,  # [T, H] each
                norm_scale: NormScale | None = None) -> torch.Tensor:
        """residual += the block's output of x, in place; returns residual. Its norm is never
        folded (models/norm_folding.py), so norm_scale is None."""
        assert norm_scale is None
        weights, ids = self.experts.route(self.gate(x), self.routing)
        out = self.experts(x, weights, ids)
        if self.shared_expert is not None:
            out += torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert.output(x)
        return residual.add_(out)


def moe_mlp(opts: MoEOptions, is_sparse: Any = None) -> MlpFactory:
    """A DecoderOptions.mlp factory: the MoE block at the layers `is_sparse(cfg, layer_idx)` names
    (all when None), a dense GatedMLP of cfg.intermediate_size at the others."""

    def build(cfg: Any, layer_idx: int, dtype: torch.dtype, prefix: str) -> nn.Module:
        if is_sparse is None or is_sparse(cfg, layer_idx):
            return SparseMoeBlock(cfg.hidden_size, opts, dtype, prefix)
        return GatedMLP(cfg.hidden_size, cfg.intermediate_size, False, dtype, prefix=prefix)

    return build
