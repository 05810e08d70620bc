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
    "MixtralForCausalLM": "pagedllm.models.mixtral:MixtralForCausalLM",
    "Qwen2MoeForCausalLM": "pagedllm.models.qwen_moe:Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM": "pagedllm.models.qwen_moe:Qwen3MoeForCausalLM",
    "DeepseekV2ForCausalLM": "pagedllm.models.deepseek:DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM": "pagedllm.models.deepseek:DeepseekV3ForCausalLM",
    # Draft heads of speculative decoding, loaded only as a speculative_config's "model" (whose
    # config's architecture EngineArgs sets by the method: a published EAGLE head says LlamaForCausalLM)
    "EagleLlamaForCausalLM": "pagedllm.models.eagle:EagleLlamaForCausalLM",
    "Eagle3LlamaForCausalLM": "pagedllm.models.eagle:Eagle3LlamaForCausalLM",
})
DRAFT_HEAD_ARCHITECTURES = {"eagle": "EagleLlamaForCausalLM", "eagle3": "Eagle3LlamaForCausalLM"}


def supported_architectures() -> list[str]:
    """Target architectures (the draft heads are not models of their own)."""
    return [n for n in MODELS.names() if n not in DRAFT_HEAD_ARCHITECTURES.values()]


def get_model_class(architecture: str) -> ModelClass:
    return MODELS.get(architecture)
