"""Content hashes of full KV blocks, the keys of the prefix cache (no torch).

A block's hash covers its own tokens *and*, through the parent hash, every token before it, so two
blocks with equal hashes hold the same KV (same tokens at the same positions after the same prefix):

    tokens   | t0 t1 t2 t3 | t4 t5 t6 t7 | t8 t9 ..        (block_size = 4)
    hashes   |     h0      |     h1      |  (partial: never hashed)
    h0 = hash((None, (t0, t1, t2, t3), extra_keys))
    h1 = hash((h0,   (t4, t5, t6, t7), extra_keys))

Two hash functions, chosen by `prefix_caching_hash_algo` (vLLM's name):
- "sha256" (default): SHA-256 over the parent digest, the token ids as int64 bytes and the extra
  keys' repr (~1 us per 16-token block). Collision resistant, so a server's users cannot craft a
  prompt whose blocks collide with someone else's cached prefix and read its KV.
- "builtin": Python's `hash` of a tuple (~0.3 us). 64 bits and not collision resistant (int hashes
  are invertible); fine offline, where every prompt is the caller's own.
"""
from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pagedllm.core.request import Request

BlockHash = int | bytes
# Per-request keys that change a block's KV without changing its tokens (LoRA id, cache salt...).
ExtraKeys = tuple[Hashable, ...]
BlockHasher = Callable[[BlockHash | None, Sequence[int], "ExtraKeys | None"], BlockHash]


def hash_block_tokens(
    parent_block_hash: BlockHash | None,
    token_ids: Sequence[int],
    extra_keys: ExtraKeys | None = None,
) -> BlockHash:
    """Hash one full block given the hash of the block before it (None for the first block)."""
    return hash((parent_block_hash, tuple(token_ids), extra_keys))


def hash_block_tokens_sha256(
    parent_block_hash: BlockHash | None,
    token_ids: Sequence[int],
    extra_keys: ExtraKeys | None = None,
) -> BlockHash:
    """SHA-256 of (parent digest, token ids, extra keys); the parent is always a 32-byte digest or
    absent, so the fields cannot run into each other."""
    h = hashlib.sha256()
    if parent_block_hash is not None:
        h.update(parent_block_hash if isinstance(parent_block_hash, bytes) else repr(parent_block_hash).encode())
    h.update(array("q", token_ids).tobytes())
    if extra_keys is not None:
        h.update(repr(extra_keys).encode())
    return h.digest()


_HASHERS: dict[str, BlockHasher] = {"builtin": hash_block_tokens, "sha256": hash_block_tokens_sha256}


def get_block_hasher(name: str) -> BlockHasher:
    if name not in _HASHERS:
        raise ValueError(f"Unknown prefix_caching_hash_algo {name!r}; supported: {sorted(_HASHERS)}.")
    return _HASHERS[name]


def update_block_hashes(
    request: Request, block_size: int, extra_keys: ExtraKeys | None = None,
    hasher: BlockHasher = hash_block_tokens,
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
    parent: BlockHash | None = block_hashes[-1] if num_hashed else None
    for i in range(num_hashed, num_full):
        start = i * block_size
        block_hash = hasher(parent, token_ids[start:start + block_size], extra_keys)
        block_hashes.append(block_hash)
        parent = block_hash
    return num_full - num_hashed
