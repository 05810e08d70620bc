"""Model classes by HF architecture name (config.architectures[0]), imported on first use."""
from __future__ import annotations

import importlib

from torch import nn

_MODELS: dict[str, str] = {
    "LlamaForCausalLM": "pagedllm.models.llama:LlamaForCausalLM",
    "MistralForCausalLM": "pagedllm.models.llama:MistralForCausalLM",
    "Qwen2ForCausalLM": "pagedllm.models.qwen2:Qwen2ForCausalLM",
    "Qwen3ForCausalLM": "pagedllm.models.qwen3:Qwen3ForCausalLM",
}


def supported_architectures() -> list[str]:
    return sorted(_MODELS)


def get_model_class(architecture: str) -> type[nn.Module]:
    if architecture not in _MODELS:
        raise ValueError(f"Unsupported model architecture {architecture!r}; supported: "
                         f"{', '.join(supported_architectures())}.")
    module_name, class_name = _MODELS[architecture].split(":")
    return getattr(importlib.import_module(module_name), class_name)
