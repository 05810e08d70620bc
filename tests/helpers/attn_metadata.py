"""Build AttentionMetadata for hand-made steps in tests: each request brings its context length so
far and its new tokens' count; blocks come from a caller-owned per-request block list."""
from __future__ import annotations

import torch

from pagedllm.attention.base import AttentionMetadata


def build_metadata(
    num_cached: list[int],  # per request: tokens already in the cache
    num_new: list[int],  # per request: tokens computed this step
    block_lists: list[list[int]],  # per request: its block ids, enough for num_cached + num_new
    block_size: int,
    device: str | torch.device = "cpu",
) -> AttentionMetadata:
    seq_lens = [c + n for c, n in zip(num_cached, num_new)]
    query_start_loc = [0]
    for n in num_new:
        query_start_loc.append(query_start_loc[-1] + n)
    slots: list[int] = []
    for cached, seq_len, blocks in zip(num_cached, seq_lens, block_lists):
        assert len(blocks) * block_size >= seq_len, "not enough blocks for the request"
        slots += [blocks[p // block_size] * block_size + p % block_size for p in range(cached, seq_len)]
    width = max(len(b) for b in block_lists)
    # Pad block tables with -1-free garbage (0) like a runner would; masked out by seq_lens.
    table = [b + [0] * (width - len(b)) for b in block_lists]
    return AttentionMetadata(
        num_actual_tokens=query_start_loc[-1],
        num_reqs=len(num_new),
        query_start_loc=torch.tensor(query_start_loc, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_table=torch.tensor(table, dtype=torch.int32, device=device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        max_query_len=max(num_new),
        max_seq_len=max(seq_lens),
        block_size=block_size,
        query_start_loc_cpu=query_start_loc,
        seq_lens_cpu=seq_lens,
    )
