"""Tiny random-weight HF checkpoints of each supported architecture, and the model each came from."""
from __future__ import annotations

from typing import Any

import torch

from pagedllm.models.source import ModelSource

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

_MLA = {"num_key_value_heads": 4, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
        "v_head_dim": 16, "num_experts_per_tok": 2, "moe_intermediate_size": 24, "tie_word_embeddings": False}
_YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}

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
    # latent attention (MLA) with experts: V2 with q_proj, softmax group-limited routing, two shared
    # experts, no dense layer; V3 with q_lora, sigmoid routing with a correction bias over groups,
    # a dense first layer, interleaved rotary under YaRN
    "deepseek_v2": ("DeepseekV2Config", {**_MLA, "q_lora_rank": None, "n_routed_experts": 6, "n_shared_experts": 2,
                                         "topk_method": "group_limited_greedy", "n_group": 3, "topk_group": 2,
                                         "first_k_dense_replace": 0, "routed_scaling_factor": 1.5}),
    "deepseek_v3": ("DeepseekV3Config", {**_MLA, "q_lora_rank": 32, "n_routed_experts": 8, "n_shared_experts": 1,
                                         "n_group": 4, "topk_group": 2, "first_k_dense_replace": 1,
                                         "routed_scaling_factor": 2.5, "norm_topk_prob": True, "rope_interleave": True,
                                         "rope_parameters": _YARN}),
}
TINY_ARCHS = list(TINY_CONFIGS)
MOE_ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"]
DENSE_ARCHS = [arch for arch in TINY_ARCHS if arch not in MOE_ARCHS]


def _tiny_config(arch: str) -> Any:
    import transformers

    class_name, extra = TINY_CONFIGS[arch]
    common = dict(vocab_size=384, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return getattr(transformers, class_name)(**{**common, **extra})


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that attention is far from uniform and norms are not all ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3's router: a buffer, saved
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)


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
