"""Qwen2-MoE and Qwen3-MoE: Qwen2's / Qwen3's attention with a mixture of experts (moe_intermediate_size
each, top num_experts_per_tok of num_experts, renormalised when norm_topk_prob) at every
decoder_sparse_step-th layer not in mlp_only_layers, a dense MLP elsewhere; Qwen2-MoE adds a shared
expert gated per token."""
from __future__ import annotations

from typing import Any

import torch

from pagedllm.models.common import DecoderForCausalLM, DecoderOptions
from pagedllm.models.moe import MoEOptions, moe_mlp


def _is_sparse(cfg: Any, layer_idx: int) -> bool:
    step = getattr(cfg, "decoder_sparse_step", 1) or 1
    return layer_idx not in (getattr(cfg, "mlp_only_layers", None) or []) and (layer_idx + 1) % step == 0


def _moe_options(cfg: Any, shared: bool) -> MoEOptions:
    return MoEOptions(cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size,
                      renormalize=bool(getattr(cfg, "norm_topk_prob", False)),
                      shared_intermediate_size=cfg.shared_expert_intermediate_size if shared else 0)


class Qwen2MoeForCausalLM(DecoderForCausalLM):
    def __init__(self, hf_config: Any, dtype: str | torch.dtype) -> None:
        opts = DecoderOptions(qkv_bias=True, mlp=moe_mlp(_moe_options(hf_config, shared=True), _is_sparse))
        super().__init__(hf_config, dtype, opts)


class Qwen3MoeForCausalLM(DecoderForCausalLM):
    def __init__(self, hf_config: Any, dtype: str | torch.dtype) -> None:
        bias = bool(getattr(hf_config, "attention_bias", False))
        opts = DecoderOptions(qkv_bias=bias, o_bias=bias, qk_norm=True,
                              mlp=moe_mlp(_moe_options(hf_config, shared=False), _is_sparse))
        super().__init__(hf_config, dtype, opts)
