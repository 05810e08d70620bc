"""Content hashes of full KV blocks, the keys of the prefix cache (no torch).

A block's hash covers its own tokens *and*, through the parent hash, every token before it, so two
blocks with equal hashes hold the same KV (same tokens at the same positions after the same prefix):

    tokens   | t0 t1 t2 t3 | t4 t5 t6 t7 | t8 t9 ..        (block_size = 4)
    hashes   |     h0      |     h1      |  (partial: never hashed)
    h0 = hash((None, (t0, t1, t2, t3), extra_keys))
    h1 = hash((h0,   (t4, t5, t6, t7), extra_keys))

We use Python's builtin `hash` of a tuple: it is the fastest option (~0.3 us for a 16-token block)
and deterministic within one process, which is all we need since the scheduler owns the cache and
hashes never leave its process. Trade-off: it is 64 bits and not collision resistant (int hashes
are invertible), so a tenant who can choose prompts could craft a collision. If the cache is ever
shared between untrusted users, or hashes cross process boundaries, switch `hash_block_tokens` to
sha256 of the pickled tuple (~3 us per block).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pagedllm.core.request import Request

BlockHash = int
# Per-request keys that change a block's KV without changing its tokens (LoRA id, cache salt...).
ExtraKeys = tuple[Hashable, ...]


def hash_block_tokens(
    parent_block_hash: BlockHash | None,
    token_ids: Sequence[int],
    extra_keys: ExtraKeys | None = None,
) -> BlockHash:
    """Hash one full block given the hash of the block before it (None for the first block)."""
    return hash((parent_block_hash, tuple(token_ids), extra_keys))


def update_block_hashes(
    request: Request, block_size: int, extra_keys: ExtraKeys | None = None
) -> int:
    """Extend `request.block_hashes` with the hashes of all newly full blocks of its tokens.

    Incremental: blocks hashed before are not hashed again, so calling it after every appended
    token costs one length comparison until a block fills up. Returns the number of new hashes.
    """
    block_hashes = request.block_hashes
    num_hashed = len(block_hashes)
    token_ids = request.all_token_ids
    num_full = len(token_ids) // block_size
    if num_full <= num_hashed:
        return 0
    parent = block_hashes[-1] if num_hashed else None
    for i in range(num_hashed, num_full):
        start = i * block_size
        parent = hash_block_tokens(parent, token_ids[start:start + block_size], extra_keys)
        block_hashes.append(parent)
    return num_full - num_hashed
