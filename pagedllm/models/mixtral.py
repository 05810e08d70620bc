"""Mixtral: the Llama/Mistral layout with a mixture of experts (top-k of num_local_experts,
renormalised) as every layer's MLP. HF calls that block block_sparse_moe and an expert's
projections w1 (gate), w3 (up) and w2 (down); they load under the common names."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

from pagedllm.models.common import DecoderForCausalLM, DecoderOptions
from pagedllm.models.moe import MoEOptions, moe_mlp

_RENAMES = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
_EXPERT = re.compile(r"\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.")


def _common_name(name: str) -> str:
    name = _EXPERT.sub(lambda m: f".mlp.experts.{m.group(1)}.{_RENAMES[m.group(2)]}.", name)
    return name.replace(".block_sparse_moe.", ".mlp.")


class MixtralForCausalLM(DecoderForCausalLM):
    def __init__(self, hf_config: Any, dtype: str | torch.dtype) -> None:
        moe = MoEOptions(hf_config.num_local_experts, hf_config.num_experts_per_tok, hf_config.intermediate_size,
                         renormalize=True)
        super().__init__(hf_config, dtype, DecoderOptions(mlp=moe_mlp(moe)))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        super().load_weights((_common_name(name), tensor) for name, tensor in weights)
