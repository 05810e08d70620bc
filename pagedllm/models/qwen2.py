"""Qwen2 / Qwen2.5: llama layout with biases on the q, k and v projections (not on o)."""
from __future__ import annotations

from typing import Any

import torch

from pagedllm.models.common import DecoderForCausalLM, DecoderOptions


class Qwen2ForCausalLM(DecoderForCausalLM):
    def __init__(self, hf_config: Any, dtype: str | torch.dtype) -> None:
        super().__init__(hf_config, dtype, DecoderOptions(qkv_bias=True))
