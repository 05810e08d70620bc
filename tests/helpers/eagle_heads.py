"""EAGLE and EAGLE-3 heads with random weights, saved in the published checkpoints' layouts
(yuhuili/EAGLE-* and yuhuili/EAGLE3-*: config.json + the head's tensors by their own names), for a
tiny llama target."""
from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import save_file


def _rand(gen: torch.Generator, *shape: int, scale: float = 0.15) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale


def _norm(gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.rand(n, generator=gen) + 0.5


def head_config(target: Any, method: str, draft_vocab_size: int | None = None,
                aux_layers: list[int] | None = None) -> dict[str, Any]:
    cfg = {k: getattr(target, k) for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                           "num_key_value_heads", "vocab_size", "max_position_embeddings",
                                           "rms_norm_eps", "bos_token_id", "eos_token_id")}
    cfg.update(model_type="llama", num_hidden_layers=1, torch_dtype="float32", rope_theta=target.rope_theta
               if hasattr(target, "rope_theta") else 10000.0)
    if method == "eagle":
        cfg["architectures"] = ["LlamaForCausalLM"]
    else:
        cfg["architectures"] = ["LlamaForCausalLMEagle3"]
        cfg["draft_vocab_size"] = draft_vocab_size or target.vocab_size
        if aux_layers is not None:
            cfg["eagle_aux_hidden_state_layer_ids"] = aux_layers
    return cfg


def head_weights(cfg: dict[str, Any], method: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    prefix = "layers.0." if method == "eagle" else "midlayer."
    attn_in = h if method == "eagle" else 2 * h
    w = {
        f"{prefix}self_attn.q_proj.weight": _rand(gen, q, attn_in),
        f"{prefix}self_attn.k_proj.weight": _rand(gen, kv, attn_in),
        f"{prefix}self_attn.v_proj.weight": _rand(gen, kv, attn_in),
        f"{prefix}self_attn.o_proj.weight": _rand(gen, h, q),
        f"{prefix}mlp.gate_proj.weight": _rand(gen, inter, h),
        f"{prefix}mlp.up_proj.weight": _rand(gen, inter, h),
        f"{prefix}mlp.down_proj.weight": _rand(gen, h, inter),
        f"{prefix}post_attention_layernorm.weight": _norm(gen, h),
    }
    if method == "eagle":
        w["fc.weight"] = _rand(gen, h, 2 * h)
        w["embed_tokens.weight"] = _rand(gen, cfg["vocab_size"], h)  # a copy the engine skips
    else:
        dv, v = cfg["draft_vocab_size"], cfg["vocab_size"]
        w["fc.weight"] = _rand(gen, h, 3 * h)
        w[f"{prefix}input_layernorm.weight"] = _norm(gen, h)
        w[f"{prefix}hidden_norm.weight"] = _norm(gen, h)
        w["norm.weight"] = _norm(gen, h)
        w["lm_head.weight"] = _rand(gen, dv, h)
        # draft id i -> target id i + d2t[i]: every third target id, a spread-out subset
        target_ids = torch.arange(dv) * (v // dv)
        w["d2t"] = target_ids - torch.arange(dv)
        t2d = torch.zeros(v, dtype=torch.bool)
        t2d[target_ids] = True
        w["t2d"] = t2d
    return w


def write_eagle_head(folder: str, target_config: Any, method: str, seed: int = 0, **config: Any) -> str:
    os.makedirs(folder, exist_ok=True)
    cfg = head_config(target_config, method, **config)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file({k: v.contiguous() for k, v in head_weights(cfg, method, seed).items()},
              os.path.join(folder, "model.safetensors"))
    return folder
