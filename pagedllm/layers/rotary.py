"""Neox-style rotary embedding (llama, mistral, qwen): the head's first and second halves rotate
as pairs, matching HF's rotate_half. cos/sin are precomputed for every position up front."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pagedllm.kernels.reference import rotary_neox
from pagedllm.layers.layer_kernels import KernelOp


@dataclass(frozen=True)
class RopeConfig:
    theta: float
    rope_type: str  # "default", "linear", "llama3" or "yarn"
    params: dict[str, Any]  # the scaling parameters (factor, low_freq_factor, ...)
    # the context the model was trained for (yarn: where its default factor comes from)
    max_position_embeddings: int | None = None


def rope_config_from_hf(hf_config: Any) -> RopeConfig:
    """Read rope settings from transformers >= 5 (`rope_parameters`) or older configs
    (`rope_theta` + `rope_scaling`)."""
    params = getattr(hf_config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" not in params and "full_attention" in params:
        params = params["full_attention"]  # per-layer-type form
    if not isinstance(params, dict) or not params:
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type")) or "default"
    return RopeConfig(theta=float(params.get("rope_theta", 10000.0)), rope_type=rope_type, params=dict(params),
                      max_position_embeddings=getattr(hf_config, "max_position_embeddings", None))


def _inv_freq(rotary_dim: int, rope: RopeConfig) -> torch.Tensor:  # [rotary_dim // 2] float32
    # Same expression as HF so fp32 cos/sin agree bit for bit.
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(torch.float) / rotary_dim
    inv_freq = 1.0 / (rope.theta ** exponents)
    if rope.rope_type == "default":
        return inv_freq
    if rope.rope_type == "linear":
        return inv_freq / float(rope.params["factor"])
    if rope.rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, rope.params)
    if rope.rope_type == "yarn":
        return _yarn(rotary_dim, rope)[0]
    raise ValueError(f"Unsupported rope_type {rope.rope_type!r}; supported: default, linear, llama3, yarn.")


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature factor, 0.1 mscale ln(scale) + 1 (1 without scaling)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_factor(rope: RopeConfig) -> float:
    """The context extension factor (DeepSeek-V3 may give only the two lengths)."""
    factor = rope.params.get("factor")
    if factor is None:
        assert rope.max_position_embeddings is not None
        factor = rope.max_position_embeddings / rope.params["original_max_position_embeddings"]
    return float(factor)


def cos_sin_scale(rope: RopeConfig) -> float:
    """What cos and sin are multiplied by: YaRN's attention factor, 1 for the other types."""
    return _yarn(2, rope)[1] if rope.rope_type == "yarn" else 1.0


def _yarn(rotary_dim: int, rope: RopeConfig) -> tuple[torch.Tensor, float]:
    """YaRN (as HF computes it): frequencies interpolated by `factor` below a correction range of
    dimensions, kept above it, ramped between; and the attention factor for cos/sin."""
    p, base, dim = rope.params, rope.theta, rotary_dim
    factor = yarn_factor(rope)
    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = p.get("mscale"), p.get("mscale_all_dim")
        attention_factor = (yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
                            if mscale and mscale_all_dim else yarn_mscale(factor))
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1
    original = p["original_max_position_embeddings"]

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


def _llama3_inv_freq(inv_freq: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth blend between."""
    factor = float(params["factor"])
    low_freq_factor = float(params["low_freq_factor"])
    high_freq_factor = float(params["high_freq_factor"])
    old_context_len = params["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(KernelOp, nn.Module):
    cos_sin_cache: torch.Tensor  # a registered buffer (see __init__)

    def __init__(self, head_size: int, rotary_dim: int, max_position: int, rope: RopeConfig) -> None:
        super().__init__()
        self.bind_forward()
        self.head_size, self.rotary_dim = head_size, rotary_dim
        freqs = torch.outer(torch.arange(max_position, dtype=torch.float), _inv_freq(rotary_dim, rope))
        # [max_position, rotary_dim]: | cos (rotary_dim/2) | sin (rotary_dim/2) |, float32 (YaRN's
        # attention factor multiplied in, as HF does); a buffer (not a parameter), so checkpoints
        # never need it.
        scale = cos_sin_scale(rope)
        cache = torch.cat([freqs.cos(), freqs.sin()], dim=-1)
        self.register_buffer("cos_sin_cache", cache * scale if scale != 1.0 else cache, persistent=False)

    def forward(
        self,
        positions: torch.Tensor,  # [T] int64
        query: torch.Tensor,  # [T, num_heads * head_size]
        key: torch.Tensor,  # [T, num_kv_heads * head_size]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q and k rotated by their positions (in place where a kernel runs). Bound to one of the
        implementations below at construction (KernelOp)."""
        return self.forward_native(positions, query, key)

    def forward_triton(self, positions: torch.Tensor, query: torch.Tensor,
                       key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if key.dtype != query.dtype or query.stride(-1) != 1 or key.stride(-1) != 1:
            return self.forward_native(positions, query, key)
        from pagedllm.kernels.triton.rotary import rotary_embedding_

        # q and k in place in one launch instead of ~20 small ops per layer.
        rotary_embedding_(positions, query, key, self.cos_sin_cache, self.head_size)
        return query, key

    def forward_cpu(self, positions: torch.Tensor, query: torch.Tensor,
                    key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if (query.dim() != 2 or query.dtype not in (torch.float32, torch.bfloat16) or key.dtype != query.dtype
                or query.stride(-1) != 1 or key.stride(-1) != 1):
            return self.forward_native(positions, query, key)
        # One fused in-place op instead of ~20 small ones per layer (they dominate at batch 1).
        self.cpu_ops.rotary_embedding_(query, positions, self.cos_sin_cache, self.head_size)
        self.cpu_ops.rotary_embedding_(key, positions, self.cos_sin_cache, self.head_size)
        return query, key

    def forward_native(
        self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The plain torch version: the reference for the fused kernels, and the path elsewhere."""
        return (rotary_neox(positions, query, self.cos_sin_cache, self.head_size),
                rotary_neox(positions, key, self.cos_sin_cache, self.head_size))
