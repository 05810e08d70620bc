"""Tiny random-weight HF checkpoints of each supported architecture, and the model each came from."""
from __future__ import annotations

from typing import Any

import torch

from pagedllm.models.source import ModelSource

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

# arch name -> (config class name, extra config kwargs)
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", {"tie_word_embeddings": True}),
    "llama3": ("LlamaConfig", {"rope_parameters": _LLAMA3_ROPE, "tie_word_embeddings": False}),
    "mistral": ("MistralConfig", {"sliding_window": 4096, "tie_word_embeddings": False}),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", {"head_dim": 24, "tie_word_embeddings": False}),
    # mixtures of experts: every layer sparse (Mixtral); a sparse layer then a dense one with a
    # shared expert, top-k not renormalised (Qwen2-MoE); a dense layer then a sparse one (Qwen3-MoE)
    "mixtral": ("MixtralConfig", {"num_local_experts": 4, "num_experts_per_tok": 2, "tie_word_embeddings": False}),
    "qwen2_moe": ("Qwen2MoeConfig", {"num_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 48,
                                     "shared_expert_intermediate_size": 80, "norm_topk_prob": False,
                                     "mlp_only_layers": [1], "tie_word_embeddings": False}),
    "qwen3_moe": ("Qwen3MoeConfig", {"num_experts": 6, "num_experts_per_tok": 3, "moe_intermediate_size": 48,
                                     "norm_topk_prob": True, "decoder_sparse_step": 2, "head_dim": 24,
                                     "tie_word_embeddings": False}),
}
TINY_ARCHS = list(TINY_CONFIGS)
MOE_ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe"]
DENSE_ARCHS = [arch for arch in TINY_ARCHS if arch not in MOE_ARCHS]


def _tiny_config(arch: str) -> Any:
    import transformers

    class_name, extra = TINY_CONFIGS[arch]
    common = dict(vocab_size=384, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return getattr(transformers, class_name)(**common, **extra)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that attention is far from uniform and norms are not all ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)


def build_tiny_hf_model(arch: str, folder: str, seed: int = 0, max_shard_size: str | None = None) -> Any:
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_tiny_config(arch), dtype=torch.float32)
    _randomize(model, seed)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    GenerationConfig(eos_token_id=[2, 5], bos_token_id=1).save_pretrained(folder)
    return model


class TinyModel:
    """A saved tiny checkpoint and the HF model it came from."""

    def __init__(self, arch: str, folder: str, hf_model: Any) -> None:
        self.arch, self.folder, self.hf_model = arch, folder, hf_model
        self.source = ModelSource(folder)
