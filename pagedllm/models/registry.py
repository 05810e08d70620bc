"""Model classes by HF architecture name (config.architectures[0]), imported on first use."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pagedllm.registry import LazyRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from pagedllm.models.common import DecoderForCausalLM

    # The model contract (docs/DESIGN.md): ModelCls(hf_config, dtype). Every model class builds on
    # DecoderForCausalLM (models by composition, models/common.py).
    ModelClass = Callable[[Any, str | torch.dtype], DecoderForCausalLM]

MODELS: LazyRegistry[ModelClass] = LazyRegistry("model architecture", {
    "LlamaForCausalLM": "pagedllm.models.llama:LlamaForCausalLM",
    "MistralForCausalLM": "pagedllm.models.llama:MistralForCausalLM",
    "Qwen2ForCausalLM": "pagedllm.models.qwen2:Qwen2ForCausalLM",
    "Qwen3ForCausalLM": "pagedllm.models.qwen3:Qwen3ForCausalLM",
})


def supported_architectures() -> list[str]:
    return MODELS.names()


def get_model_class(architecture: str) -> ModelClass:
    return MODELS.get(architecture)
