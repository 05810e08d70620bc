"""The attention layer models call: reshapes heads and hands off to the step's backend, which
reads the paged KV cache of this layer from the forward context.

Before attention, q and k may need a norm scale (a folded input norm), per-head RMSNorm (Qwen3)
and the rotary embedding. What the backend fuses of that work (its declared capabilities) is
handed over as a QKVPrologue and done inside its kernels; the rest runs here. Which is which is
decided once, at construction, from the layer kernels' backend capabilities (AttentionPlan).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pagedllm.attention.base import BackendCapabilities, NormScale, QKVPrologue
from pagedllm.attention.forward_context import get_forward_context
from pagedllm.kernels.reference import scale_rows_by_inv_rms
from pagedllm.layers.layer_kernels import OpImpl, current_layer_kernels
from pagedllm.layers.norm import RMSNorm
from pagedllm.layers.rotary import RotaryEmbedding


@dataclass(frozen=True)
class AttentionPlan:
    """What the backend does of the work before attention; the layer does the rest."""

    fuse_rotary: bool  # hand q/k over unrotated, with the positions (a QKVPrologue)
    fuse_qk_norm: bool  # and unnormalised (Qwen3's q/k norms)
    fuse_norm_scale: bool  # and q/k/v unscaled (a folded input norm)

    @staticmethod
    def choose(caps: BackendCapabilities, head_size: int, rotary_dim: int) -> AttentionPlan:
        rotary = caps.fuses_rotary
        # The fused q/k norm normalises the whole head, then rotates: only when rotary covers it.
        return AttentionPlan(rotary, rotary and caps.fuses_qk_norm and rotary_dim == head_size,
                             rotary and caps.fuses_norm_scale)


class Attention(nn.Module):
    def __init__(self, num_heads: int, head_size: int, num_kv_heads: int, scale: float, layer_idx: int,
                 rotary_dim: int | None = None) -> None:
        """rotary_dim: the rotary embedding's (the head size unless partial); None: the model
        applies no rotary embedding through this layer."""
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}.")
        self.num_heads, self.head_size, self.num_kv_heads = num_heads, head_size, num_kv_heads
        self.scale = scale
        self.layer_idx = layer_idx
        kernels = current_layer_kernels()
        caps = kernels.attention if rotary_dim is not None else BackendCapabilities()
        self.plan = AttentionPlan.choose(caps, head_size, rotary_dim or head_size)
        self._triton_scale = kernels.ops is OpImpl.TRITON
        # A checkpoint's calibrated K/V cache scales (k_scale, v_scale), used by an fp8 KV cache
        # (models/param_loading.py sets them); 1.0 otherwise, as vLLM's default
        self.kv_scales = (1.0, 1.0)

    def forward(
        self,
        q: torch.Tensor,  # [T, num_heads * head_size]
        k: torch.Tensor,  # [T, num_kv_heads * head_size]
        v: torch.Tensor,  # [T, num_kv_heads * head_size]
        rotary: tuple[torch.Tensor, RotaryEmbedding] | None = None,  # (positions [T], the layer's rope)
        qk_norm: tuple[RMSNorm, RMSNorm] | None = None,  # Qwen3: per-head RMSNorm of q and k, before rotary
        norm_scale: NormScale | None = None,  # (h [T, hidden], eps): q, k, v times 1 / rms(h) first
    ) -> torch.Tensor:  # [T, num_heads * head_size]
        """Attention over the paged cache, after q, k and v are scaled (`norm_scale`), q and k
        normalised (`qk_norm`) and rotated (`rotary`): by the backend where the plan says so, here
        otherwise."""
        plan = self.plan
        assert rotary is not None or not plan.fuse_rotary, "a layer built with rotary_dim is called with rotary"
        if norm_scale is not None and not plan.fuse_norm_scale:
            q, k, v = self._scale_qkv(q, k, v, norm_scale)
            norm_scale = None
        if qk_norm is not None and not plan.fuse_qk_norm:
            q, k = self._normalize_heads(q, k, qk_norm)
        prologue = None
        if rotary is not None:
            positions, rope = rotary
            if plan.fuse_rotary:
                fused_norm = None
                if qk_norm is not None:  # not normalised above: the plan fuses it
                    fused_norm = (qk_norm[0].weight, qk_norm[1].weight, qk_norm[0].eps)
                prologue = QKVPrologue(positions, rope.cos_sin_cache, fused_norm, norm_scale)
            else:
                q, k = rope(positions, q, k)
        ctx = get_forward_context()
        num_tokens = q.shape[0]
        out = ctx.backend.forward(q.view(num_tokens, self.num_heads, self.head_size),
                                  k.view(num_tokens, self.num_kv_heads, self.head_size),
                                  v.view(num_tokens, self.num_kv_heads, self.head_size),
                                  ctx.kv_caches[self.layer_idx], ctx.attn_metadata, self.scale, prologue,
                                  kv_scales=self.kv_scales)
        return out.reshape(num_tokens, self.num_heads * self.head_size)

    def forward_latent(self, q: torch.Tensor, rows: torch.Tensor, value_size: int) -> torch.Tensor:
        """q [T, num_heads * head_size] against the cached rows ([T, head_size] this step's), which
        are keys and, cut to value_size, values (a layer built with one kv head: MLA);
        [T, num_heads, value_size]."""
        assert self.num_kv_heads == 1
        ctx = get_forward_context()
        num_tokens = q.shape[0]
        return ctx.backend.forward_latent(q.view(num_tokens, self.num_heads, self.head_size), rows,
                                          ctx.kv_caches[self.layer_idx], ctx.attn_metadata, self.scale, value_size)

    def _scale_qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   norm_scale: NormScale) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v ([T, heads * head_size] each) times each token's 1 / rms(h); one launch when
        they are the column ranges of one qkv output."""
        if self._triton_scale:
            from pagedllm.kernels.triton.norm_scale import scale_qkv_by_inv_rms_

            num_tokens = q.shape[0]
            scale_qkv_by_inv_rms_(q.view(num_tokens, self.num_heads, self.head_size),
                                  k.view(num_tokens, self.num_kv_heads, self.head_size),
                                  v.view(num_tokens, self.num_kv_heads, self.head_size), *norm_scale)
            return q, k, v  # scaled in place: views of this step's qkv output
        return (scale_rows_by_inv_rms(q, *norm_scale), scale_rows_by_inv_rms(k, *norm_scale),
                scale_rows_by_inv_rms(v, *norm_scale))

    def _normalize_heads(self, q: torch.Tensor, k: torch.Tensor,
                         qk_norm: tuple[RMSNorm, RMSNorm]) -> tuple[torch.Tensor, torch.Tensor]:
        num_tokens = q.shape[0]
        q = qk_norm[0](q.reshape(num_tokens, self.num_heads, self.head_size)).view(num_tokens, -1)
        k = qk_norm[1](k.reshape(num_tokens, self.num_kv_heads, self.head_size)).view(num_tokens, -1)
        return q, k
