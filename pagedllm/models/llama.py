"""Llama family: Llama 2/3 (incl. llama3 rope scaling), SmolLM2, and Mistral on the same code.

Mistral: sliding-window attention is not applied; it is exact for contexts shorter than
config.sliding_window (4096+ in released models), and an approximation beyond.
"""
from __future__ import annotations

from typing import Any

import torch

from pagedllm.models.common import DecoderForCausalLM, DecoderOptions


class LlamaForCausalLM(DecoderForCausalLM):
    def __init__(self, hf_config: Any, dtype: str | torch.dtype) -> None:
        attention_bias = bool(getattr(hf_config, "attention_bias", False))
        opts = DecoderOptions(qkv_bias=attention_bias, o_bias=attention_bias,
                              mlp_bias=bool(getattr(hf_config, "mlp_bias", False)))
        super().__init__(hf_config, dtype, opts)


class MistralForCausalLM(LlamaForCausalLM):
    pass
