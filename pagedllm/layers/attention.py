"""The attention layer models call: reshapes heads and hands off to the step's backend, which
reads the paged KV cache of this layer from the forward context."""
from __future__ import annotations

import torch
from torch import nn

from pagedllm.attention.forward_context import get_forward_context
from pagedllm.kernels.triton import triton_applies
from pagedllm.layers.norm import RMSNorm, scale_rows_by_inv_rms
from pagedllm.layers.rotary import RotaryEmbedding


class Attention(nn.Module):
    def __init__(self, num_heads: int, head_size: int, num_kv_heads: int, scale: float, layer_idx: int) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}.")
        self.num_heads, self.head_size, self.num_kv_heads = num_heads, head_size, num_kv_heads
        self.scale = scale
        self.layer_idx = layer_idx

    def forward(
        self,
        q: torch.Tensor,  # [T, num_heads * head_size]
        k: torch.Tensor,  # [T, num_kv_heads * head_size]
        v: torch.Tensor,  # [T, num_kv_heads * head_size]
        rotary: tuple[torch.Tensor, RotaryEmbedding] | None = None,  # (positions [T], the layer's rope)
        qk_norm: tuple[RMSNorm, RMSNorm] | None = None,  # Qwen3: per-head RMSNorm of q and k, before rotary
        norm_scale: tuple[torch.Tensor, float] | None = None,  # (h [T, hidden], eps): see below
    ) -> torch.Tensor:  # [T, num_heads * head_size]
        """Attention over the paged cache; with `rotary`, q and k are rotated first (and with
        `qk_norm` normalised before that), by the backend in its cache-write kernel when it can
        (one launch instead of two, or eight with the norms' torch ops). With `norm_scale` (a
        model whose input norm is folded into the qkv projection), q, k and v are first
        multiplied by each token's 1 / rms(h), by the backend's decode kernel when it can."""
        ctx = get_forward_context()
        backend = ctx.backend
        fused = rotary is not None and backend.fuses_rotary and rotary[1].triton_applies(q, k)
        if norm_scale is not None and not (fused and backend.fuses_norm_scale):
            q, k, v = self._scale_qkv(q, k, v, norm_scale)
            norm_scale = None
        fused_norm = None
        if qk_norm is not None:
            if fused and backend.fuses_qk_norm and rotary[1].rotary_dim == self.head_size:
                fused_norm = (qk_norm[0].weight, qk_norm[1].weight, qk_norm[0].eps)
            else:
                q, k = self._normalize_heads(q, k, qk_norm)
        if rotary is not None and not fused:
            positions, rope = rotary
            q, k = rope(positions, q, k)
        num_tokens = q.shape[0]
        args = (q.view(num_tokens, self.num_heads, self.head_size),
                k.view(num_tokens, self.num_kv_heads, self.head_size),
                v.view(num_tokens, self.num_kv_heads, self.head_size),
                ctx.kv_caches[self.layer_idx], ctx.attn_metadata, self.scale)
        if fused:
            assert rotary is not None
            out = backend.forward_with_rotary(*args, rotary[0], rotary[1].cos_sin_cache, qk_norm=fused_norm,
                                              norm_scale=norm_scale)
        else:
            out = backend.forward(*args)
        return out.reshape(num_tokens, self.num_heads * self.head_size)

    def _scale_qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   norm_scale: tuple[torch.Tensor, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v ([T, heads * head_size] each) times each token's 1 / rms(h); one launch when
        they are the column ranges of one qkv output."""
        if triton_applies(q):
            from pagedllm.kernels.triton.norm_scale import scale_qkv_by_inv_rms_

            num_tokens = q.shape[0]
            scale_qkv_by_inv_rms_(q.view(num_tokens, self.num_heads, self.head_size),
                                  k.view(num_tokens, self.num_kv_heads, self.head_size),
                                  v.view(num_tokens, self.num_kv_heads, self.head_size), *norm_scale)
            return q, k, v  # scaled in place: views of this step's qkv output
        return tuple(scale_rows_by_inv_rms(x, *norm_scale) for x in (q, k, v))  # type: ignore[return-value]

    def _normalize_heads(self, q: torch.Tensor, k: torch.Tensor,
                         qk_norm: tuple[RMSNorm, RMSNorm]) -> tuple[torch.Tensor, torch.Tensor]:
        num_tokens = q.shape[0]
        q = qk_norm[0](q.reshape(num_tokens, self.num_heads, self.head_size)).view(num_tokens, -1)
        k = qk_norm[1](k.reshape(num_tokens, self.num_kv_heads, self.head_size)).view(num_tokens, -1)
        return q, k
