"""Model classes by HF architecture name (config.architectures[0]), imported on first use."""
from __future__ import annotations

from torch import nn

from pagedllm.registry import LazyRegistry

MODELS: LazyRegistry[type[nn.Module]] = LazyRegistry("model architecture", {
    "LlamaForCausalLM": "pagedllm.models.llama:LlamaForCausalLM",
    "MistralForCausalLM": "pagedllm.models.llama:MistralForCausalLM",
    "Qwen2ForCausalLM": "pagedllm.models.qwen2:Qwen2ForCausalLM",
    "Qwen3ForCausalLM": "pagedllm.models.qwen3:Qwen3ForCausalLM",
})


def supported_architectures() -> list[str]:
    return MODELS.names()


def get_model_class(architecture: str) -> type[nn.Module]:
    return MODELS.get(architecture)
