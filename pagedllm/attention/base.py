"""The attention backend interface and the per-step metadata every backend reads."""
from __future__ import annotations

import dataclasses
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


# (h [num_tokens, hidden], eps): q, k and v are to be multiplied by each token's 1 / rms(h) first
# (a model whose input norm is folded into its qkv projection, models/norm_folding.py)
NormScale = tuple[torch.Tensor, float]


@dataclass(frozen=True)
class BackendCapabilities:
    """What a backend can do beyond plain attention over the paged cache. The model reads these
    once at load to decide what its attention layers hand over (layers/attention.py) and the
    worker to decide whether decode steps are captured as CUDA graphs."""

    # rotates q and k by their positions in its cache write (QKVPrologue.positions/cos_sin_cache)
    fuses_rotary: bool = False
    # also RMS-normalises each head of q and k before rotating them (QKVPrologue.qk_norm);
    # only together with fuses_rotary
    fuses_qk_norm: bool = False
    # also scales q, k and v by a token's 1 / rms(h) first (QKVPrologue.norm_scale); only
    # together with fuses_rotary
    fuses_norm_scale: bool = False
    # its decode path reads lengths from device memory and never syncs the host, so a decode
    # step can be captured once and replayed as a CUDA graph
    cuda_graphs: bool = False


@dataclass(frozen=True, slots=True)
class QKVPrologue:
    """Work on this step's q, k and v that the backend does before attention, in its own
    kernels: the rotary embedding, and optionally q/k head norms before it and a norm scale
    before everything. Only what the backend's capabilities declare is ever handed over."""

    positions: torch.Tensor  # [num_tokens] int64
    cos_sin_cache: torch.Tensor  # [max_position, rotary_dim] float32, neox layout
    qk_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None  # (q weight, k weight, eps)
    norm_scale: NormScale | None = None


@dataclass(frozen=True)
class AttentionBackendOptions:
    """What the engine tells a backend when it builds it (Platform.make_attention_backend)."""

    max_num_seqs: int = 256
    max_model_len: int | None = None  # the final one is set by configure() before graph capture
    rotary_in_decode: bool = True  # KernelConfig.decode_rotary (backends that fuse rotary)
    pdl: bool = False  # decode attention launched as a programmatic dependent (CUDA)
    cpu_kernels: Any = None  # the built C++ module, for the CPU backend; None: torch only


class AttentionBackend(ABC):
    """Computes attention for a flattened mixed batch against the paged KV cache."""

    name: str = "base"
    capabilities = BackendCapabilities()

    def __init__(self, options: AttentionBackendOptions | None = None) -> None:
        self.options = options or AttentionBackendOptions()

    def configure(self, max_num_seqs: int, max_model_len: int) -> None:
        """The engine's final limits, set after start-up sized the KV cache and before any CUDA
        graph is captured. Backends with workspaces or capture-time choices override this."""
        self.options = dataclasses.replace(self.options, max_num_seqs=max_num_seqs, max_model_len=max_model_len)

    @staticmethod
    def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_size: int) -> tuple[int, ...]:
        """Shape of one layer's cache tensor: K and V stacked in dim 0."""
        return (2, num_blocks, block_size, num_kv_heads, head_size)

    def forward_latent(
        self,
        query: torch.Tensor,  # [num_tokens, num_heads, row_size]
        rows: torch.Tensor,  # [num_tokens, row_size]: each token's row, its key and (the first value_size) value
        kv_cache: torch.Tensor,  # kv_cache_shape(..., 1, row_size), both halves the same memory
        metadata: AttentionMetadata,
        scale: float,
        value_size: int,
    ) -> torch.Tensor:  # [num_tokens, num_heads, value_size]
        """Multi-query attention whose keys and values are the same cached rows, the values their
        first value_size columns (MLA's latent, models/deepseek.py). Here through forward() with
        K = V = rows, the output cut to value_size; a backend with a latent kernel overrides this to
        read each row once."""
        row = rows.unsqueeze(1)
        return self.forward(query, row, row, kv_cache, metadata, scale)[..., :value_size]

    @abstractmethod
    def forward(
        self,
        query: torch.Tensor,  # [num_tokens, num_heads, head_size]
        key: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        value: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        kv_cache: torch.Tensor,  # kv_cache_shape(...)
        metadata: AttentionMetadata,
        scale: float,
        prologue: QKVPrologue | None = None,
        out: torch.Tensor | None = None,  # [num_tokens, num_heads, head_size]
        kv_scales: tuple[float, float] = (1.0, 1.0),
    ) -> torch.Tensor:
        """Write key/value into kv_cache at metadata.slot_mapping, then return attention output
        [num_tokens, num_heads, head_size] for every query token over its request's context.

        With a `prologue` (only from layers whose backend declares the capability), q, k and v
        are first transformed as it says (query and key in place). With `out`, the output goes
        there and only its first num_actual_tokens rows are written (the rest is padding).
        kv_scales (k_scale, v_scale): an fp8 cache holds K / k_scale and V / v_scale (a
        checkpoint's calibrated scales); a cache of any other type ignores them."""


def effective_kv_scales(kv_cache: torch.Tensor, kv_scales: tuple[float, float]) -> tuple[float, float]:
    """The K/V scales a cache applies: the given ones for an fp8 cache, none otherwise."""
    return kv_scales if kv_cache.dtype == torch.float8_e4m3fn else (1.0, 1.0)
