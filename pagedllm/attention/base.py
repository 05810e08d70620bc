"""The attention backend interface and the per-step metadata every backend reads."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AttentionMetadata:
    """Where this step's tokens are and where their K/V live.

    The step's tokens are flattened request by request (no padding):

        tokens   | req0: q0 tokens | req1: q1 tokens | ... |
        query_start_loc = [0, q0, q0+q1, ...]

    Request i attends to its first seq_lens[i] tokens; its new tokens are the last q_i of those, so
    its already-cached context is seq_lens[i] - q_i tokens (causal within the new ones).
    """

    num_actual_tokens: int
    num_reqs: int
    query_start_loc: torch.Tensor  # [num_reqs + 1] int32
    seq_lens: torch.Tensor  # [num_reqs] int32
    block_table: torch.Tensor  # [num_reqs, max_num_blocks_per_req] int32
    slot_mapping: torch.Tensor  # [num_tokens] int64: block_id * block_size + offset
    max_query_len: int
    max_seq_len: int
    block_size: int
    query_start_loc_cpu: list[int]  # host mirrors, so CPU backends loop without syncs
    seq_lens_cpu: list[int]
    # Per-step work a backend derives once and reuses in every layer (index lists, masks).
    backend_cache: dict[str, Any] = field(default_factory=dict)

    @property
    def is_decode_only(self) -> bool:
        return self.max_query_len == 1


class AttentionBackend(ABC):
    """Computes attention for a flattened mixed batch against the paged KV cache."""

    name: str = "base"
    # Whether forward_with_rotary is available: the rotary embedding of q and k fused into the
    # backend's cache write. Otherwise the attention layer applies the rotary first.
    fuses_rotary: bool = False
    # Whether forward_with_rotary also takes `qk_norm`: Qwen3's per-head RMSNorm of q and k, fused
    # in front of the rotation. Otherwise the attention layer normalises q and k first.
    fuses_qk_norm: bool = False
    # Whether forward_with_rotary also takes `norm_scale` (h, eps): q, k and v multiplied by each
    # token's 1 / rms(h) first (a model with the input norm folded into its qkv projection,
    # models/norm_folding.py). Otherwise the attention layer scales them first.
    fuses_norm_scale: bool = False

    @staticmethod
    def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_size: int) -> tuple[int, ...]:
        """Shape of one layer's cache tensor: K and V stacked in dim 0."""
        return (2, num_blocks, block_size, num_kv_heads, head_size)

    @abstractmethod
    def forward(
        self,
        query: torch.Tensor,  # [num_tokens, num_heads, head_size]
        key: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        value: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        kv_cache: torch.Tensor,  # kv_cache_shape(...)
        metadata: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        """Write key/value into kv_cache at metadata.slot_mapping, then return attention output
        [num_tokens, num_heads, head_size] for every query token over its request's context."""

    def forward_with_rotary(
        self,
        query: torch.Tensor,  # [num_tokens, num_heads, head_size], not yet rotated
        key: torch.Tensor,  # [num_tokens, num_kv_heads, head_size], not yet rotated
        value: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
        scale: float,
        positions: torch.Tensor,  # [num_tokens] int64
        cos_sin_cache: torch.Tensor,  # [max_position, rotary_dim] float32, neox layout
        qk_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,  # (q weight, k weight, eps)
        norm_scale: tuple[torch.Tensor, float] | None = None,  # (h [num_tokens, hidden], eps)
    ) -> torch.Tensor:
        """forward() after rotating query and key (in place) by their positions; with `qk_norm`
        (backends that set fuses_qk_norm), after RMS-normalising each head of them first; with
        `norm_scale` (backends that set fuses_norm_scale), after scaling q, k and v by 1 / rms(h)
        before all that."""
        raise NotImplementedError(f"The {self.name} backend does not fuse the rotary embedding.")
