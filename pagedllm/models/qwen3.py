"""Qwen3 (dense): per-head RMSNorm on q and k before rotary, head_dim taken from the config
(it need not equal hidden_size / num_heads), optional attention bias."""
from __future__ import annotations

from typing import Any

import torch

from pagedllm.models.common import DecoderForCausalLM, DecoderOptions


class Qwen3ForCausalLM(DecoderForCausalLM):
    def __init__(self, hf_config: Any, dtype: str | torch.dtype) -> None:
        attention_bias = bool(getattr(hf_config, "attention_bias", False))
        super().__init__(hf_config, dtype, DecoderOptions(qkv_bias=attention_bias, o_bias=attention_bias,
                                                          qk_norm=True))
