"""Model folders without a download: a config.json of a given shape plus a word-level tokenizer
whose every id decodes, so the engine runs on random (load_format="dummy") or saved weights."""
from __future__ import annotations

import os
from typing import Any

# Llama-3-8B and -70B, Qwen3-0.6B, Qwen3-30B-A3B and DeepSeek-V2-Lite shapes (config.json values of the released
# models).
LLAMA3_8B: dict[str, Any] = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=14336,
    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
    max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2,
)
LLAMA3_70B: dict[str, Any] = {**LLAMA3_8B, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                               "num_attention_heads": 64}
QWEN3_0_6B: dict[str, Any] = dict(
    architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=1024, intermediate_size=3072,
    num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
    max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
    bos_token_id=1, eos_token_id=2,
)

# A mixture of experts: 128 experts of which 8 per token, 3.3B of its 30.5B weights active
QWEN3_30B_A3B: dict[str, Any] = dict(
    architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144,
    moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, decoder_sparse_step=1,
    mlp_only_layers=[], num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
    vocab_size=151936, max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
)

# Multi-head latent attention and 64 experts (6 per token, 2 shared), the first layer dense
DEEPSEEK_V2_LITE: dict[str, Any] = dict(
    architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2", hidden_size=2048, intermediate_size=10944,
    moe_intermediate_size=1408, n_routed_experts=64, n_shared_experts=2, num_experts_per_tok=6,
    first_k_dense_replace=1, topk_method="greedy", n_group=1, topk_group=1, routed_scaling_factor=1.0,
    num_hidden_layers=27, num_attention_heads=16, num_key_value_heads=16, q_lora_rank=None, kv_lora_rank=512,
    qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, vocab_size=102400, max_position_embeddings=163840,
    rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                     "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1, "mscale": 0.707,
                     "mscale_all_dim": 0.707},
)


def write_tokenizer(folder: str, vocab_size: int, eos_id: int = 2) -> None:
    """A word-level tokenizer: id i <-> "t{i}" (ids 0/1/eos are unk/bos/eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1",
                                   eos_token=f"t{eos_id}", pad_token="t0")
    fast.save_pretrained(folder)


def write_model_folder(folder: str, shape: dict[str, Any]) -> str:
    """config.json of `shape` and a tokenizer for its vocabulary, in `folder`."""
    from transformers import AutoConfig

    os.makedirs(folder, exist_ok=True)
    kwargs = {k: v for k, v in shape.items() if k != "model_type"}
    config = AutoConfig.for_model(shape["model_type"], **kwargs)
    config.save_pretrained(folder)
    write_tokenizer(folder, shape["vocab_size"], shape.get("eos_token_id", 2))
    return folder
