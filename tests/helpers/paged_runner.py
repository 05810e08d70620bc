"""Run one of our models step by step over a real paged KV cache with the torch backend, without
the engine: tests feed each sequence's new tokens per step and compare logits with HF."""
from __future__ import annotations

import random

import torch
from torch import nn

from pagedllm.attention.forward_context import ForwardContext, set_forward_context
from pagedllm.attention.torch_ref import TorchAttentionBackend
from tests.helpers.attn_metadata import build_metadata


class PagedRunner:
    """Holds per-sequence token counts and blocks (drawn in shuffled order, so block ids are
    non-contiguous) and one KV cache tensor per layer."""

    def __init__(self, model: nn.Module, num_blocks: int = 64, block_size: int = 4, seed: int = 0) -> None:
        cfg = model.config
        layout = type(model).kv_cache_layout(cfg)
        shape = TorchAttentionBackend.kv_cache_shape(num_blocks, block_size, layout.num_kv_heads, layout.head_size)
        dtype = next(model.parameters()).dtype
        # NaN-filled: attention that reads a slot it should not see shows up in the logits. Shared
        # K/V rows (MLA) are one tensor seen as both halves, as the worker allocates them.
        first = (1, *shape[1:]) if layout.shared else shape
        self.kv_caches = [torch.full(first, float("nan"), dtype=dtype).expand(shape)
                          for _ in range(cfg.num_hidden_layers)]
        self.model, self.block_size, self.backend = model, block_size, TorchAttentionBackend()
        self.free_blocks = list(range(num_blocks))
        random.Random(seed).shuffle(self.free_blocks)
        self.num_computed: dict[int, int] = {}
        self.blocks: dict[int, list[int]] = {}

    def _allocate(self, seq_id: int, seq_len: int) -> None:
        blocks = self.blocks.setdefault(seq_id, [])
        while len(blocks) * self.block_size < seq_len:
            blocks.append(self.free_blocks.pop())

    @torch.no_grad()
    def step(self, new_tokens: dict[int, list[int]], all_logits: bool = False) -> dict[int, torch.Tensor]:
        """Compute `new_tokens` for each sequence id in one flattened step. Returns per sequence the
        logits [V] of its last new token, or [n, V] of all of them with all_logits."""
        seq_ids = list(new_tokens)
        cached = [self.num_computed.get(s, 0) for s in seq_ids]
        counts = [len(new_tokens[s]) for s in seq_ids]
        for s, c, n in zip(seq_ids, cached, counts):
            self._allocate(s, c + n)
        md = build_metadata(cached, counts, [self.blocks[s] for s in seq_ids], self.block_size)
        input_ids = torch.tensor([t for s in seq_ids for t in new_tokens[s]], dtype=torch.int64)
        positions = torch.cat([torch.arange(c, c + n) for c, n in zip(cached, counts)])
        with set_forward_context(ForwardContext(md, self.kv_caches, self.backend)):
            hidden = self.model(input_ids, positions)
        logits = self.model.compute_logits(hidden)
        out: dict[int, torch.Tensor] = {}
        for i, s in enumerate(seq_ids):
            start, end = md.query_start_loc_cpu[i], md.query_start_loc_cpu[i + 1]
            out[s] = logits[start:end] if all_logits else logits[end - 1]
            self.num_computed[s] = cached[i] + counts[i]
        return out
