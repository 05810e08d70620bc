"""Maps requests to KV blocks: prefix-cache lookup, slot allocation, freeing (no torch).

A request's block table covers its tokens in order; block i holds tokens
[i * block_size, (i + 1) * block_size). After `allocate_slots` it covers

    | prefix-cache hits | computed before | scheduled this step | spare slots of the last block |
    0                   num_computed_tokens                     num_computed + num_new_tokens
"""
from __future__ import annotations

from pagedllm.core.block_hash import get_block_hasher, update_block_hashes
from pagedllm.core.block_pool import BlockPool, KVCacheBlock
from pagedllm.core.request import Request


class KVCacheManager:
    """Per-request block tables over one BlockPool; the scheduler's only door to the KV cache."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool,
                 hash_algo: str = "sha256") -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}.")
        self.block_size = block_size
        self.hasher = get_block_hasher(hash_algo)
        self.enable_prefix_caching = enable_prefix_caching
        self.block_pool = BlockPool(num_blocks, enable_prefix_caching)
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = {}
        # req_id -> how many leading blocks of its table are already registered in the cache,
        # so each step only looks at blocks that filled up since.
        self.num_cached_blocks: dict[str, int] = {}

    # ---- stats ----------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be allocated (free cached blocks included)."""
        return self.block_pool.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction of KV blocks in use (0.0 - 1.0)."""
        return self.block_pool.usage

    @property
    def prefix_cache_queries(self) -> int:
        """Tokens looked up in the prefix cache so far."""
        return self.block_pool.prefix_cache_queries

    @property
    def prefix_cache_hits(self) -> int:
        """Tokens found in the prefix cache so far."""
        return self.block_pool.prefix_cache_hits

    # ---- lookup / allocate / free ---------------------------------------------------------------

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """Longest run of cached full blocks matching the start of the request's tokens.

        Never covers the whole sequence: the hit stops at `num_tokens - 1` tokens, so at least
        the last token is recomputed and the runner gets its logits. Returns ([], 0) when
        caching is off or the request wants prompt logprobs (they need every prompt position's
        logits). The blocks are not referenced yet: pass them to `allocate_slots`.
        """
        if not self.enable_prefix_caching or request.sampling_params.prompt_logprobs is not None:
            return [], 0
        update_block_hashes(request, self.block_size, hasher=self.hasher)  # no-op when the scheduler kept them current
        block_hashes = request.block_hashes
        max_hit_blocks = (request.num_tokens - 1) // self.block_size
        cache = self.block_pool.cached_block_hash_to_block
        hits: list[KVCacheBlock] = []
        for block_hash in block_hashes[:max_hit_blocks]:
            block = cache.get(block_hash)
            if block is None:
                break
            hits.append(block)
        num_hit_tokens = len(hits) * self.block_size
        self.block_pool.prefix_cache_queries += request.num_tokens
        self.block_pool.prefix_cache_hits += num_hit_tokens
        return hits, num_hit_tokens

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        new_computed_blocks: list[KVCacheBlock] | None = None,
        num_new_computed_tokens: int = 0,
        num_lookahead_tokens: int = 0,
    ) -> list[int] | None:
        """Make room for `num_new_tokens` more tokens after the computed (and newly hit) ones.

        `new_computed_blocks` / `num_new_computed_tokens` are a prefix hit from
        `get_computed_blocks`, not yet counted in `request.num_computed_tokens`.
        `num_lookahead_tokens`: slots past those that a draft model writes (they hold no token of
        the request yet, so no block is cached on their account).
        Returns the ids of the blocks appended to the request's table (hit blocks first), or
        None, changing nothing, when the pool lacks free blocks.
        """
        req_id = request.request_id
        req_blocks = self.req_to_blocks.get(req_id)
        num_old_blocks = len(req_blocks) if req_blocks is not None else 0
        num_total_tokens = request.num_computed_tokens + num_new_computed_tokens + num_new_tokens
        num_required = -(-(num_total_tokens + num_lookahead_tokens) // self.block_size)
        num_new_blocks = num_required - num_old_blocks
        new_block_ids: list[int] = []
        if num_new_blocks > 0 or new_computed_blocks:
            hits = new_computed_blocks or []
            num_new_blocks -= len(hits)
            if not self._can_allocate(max(num_new_blocks, 0), hits):
                return None
            if req_blocks is None:
                req_blocks = self.req_to_blocks[req_id] = []
                self.num_cached_blocks[req_id] = 0
            new_blocks = self._take_blocks(hits, num_new_blocks)
            req_blocks.extend(new_blocks)
            new_block_ids = [block.block_id for block in new_blocks]
        if self.enable_prefix_caching and req_blocks is not None:
            self._cache_full_blocks(request, req_blocks, num_total_tokens)
        return new_block_ids

    def _can_allocate(self, num_new_blocks: int, hits: list[KVCacheBlock]) -> bool:
        # A free cached hit block is taken out of the free queue too, so it counts against it.
        num_free_hits = sum(1 for block in hits if block.ref_cnt == 0)
        return num_new_blocks + num_free_hits <= self.block_pool.num_free_blocks

    def _take_blocks(self, hits: list[KVCacheBlock], num_new_blocks: int) -> list[KVCacheBlock]:
        # Touch hits before taking new blocks, or get_new_blocks could evict a hit block.
        self.block_pool.touch(hits)
        if num_new_blocks <= 0:
            return list(hits)
        return [*hits, *self.block_pool.get_new_blocks(num_new_blocks)]

    def _cache_full_blocks(
        self, request: Request, req_blocks: list[KVCacheBlock], num_total_tokens: int
    ) -> None:
        # Blocks whose tokens are all computed by the end of this step become findable now, so a
        # request admitted later in the same step can hit them: the backend writes a step's KV
        # into the cache before any attention reads it (as paged attention does).
        num_full_blocks = min(num_total_tokens, request.num_tokens) // self.block_size
        req_id = request.request_id
        num_cached = self.num_cached_blocks[req_id]
        if num_full_blocks <= num_cached:
            return
        if len(request.block_hashes) < num_full_blocks:
            update_block_hashes(request, self.block_size, hasher=self.hasher)
        self.block_pool.cache_full_blocks(req_blocks, request.block_hashes, num_cached, num_full_blocks)
        self.num_cached_blocks[req_id] = num_full_blocks

    def free(self, request: Request) -> None:
        """Release the request's blocks, tail first, so its last blocks are evicted first."""
        req_blocks = self.req_to_blocks.pop(request.request_id, None)
        self.num_cached_blocks.pop(request.request_id, None)
        if req_blocks:
            self.block_pool.free_blocks(reversed(req_blocks))

    def get_block_ids(self, request_id: str) -> list[int]:
        """A copy of the request's block table."""
        return [block.block_id for block in self.req_to_blocks.get(request_id, ())]

    def reset_prefix_cache(self) -> bool:
        """Drop all cached hashes; False (and nothing done) while any block is in use."""
        return self.block_pool.reset_prefix_cache()

    # ---- invariants (tests, debugging) ----------------------------------------------------------

    def check_invariants(self) -> None:
        """Assert the pool is consistent with the requests' block tables. O(num_blocks)."""
        pool = self.block_pool
        holders = [0] * pool.num_blocks
        for blocks in self.req_to_blocks.values():
            for block in blocks:
                holders[block.block_id] += 1
        free_ids = [block.block_id for block in pool.free_block_queue.get_all_free_blocks()]
        assert len(free_ids) == len(set(free_ids)) == pool.num_free_blocks, "free queue corrupt"
        free_set = set(free_ids)
        for block in pool.blocks:
            assert block.ref_cnt == holders[block.block_id], f"block {block.block_id} ref_cnt"
            assert (block.ref_cnt == 0) == (block.block_id in free_set), f"block {block.block_id} queue"
            if block.block_hash is not None:
                assert pool.cached_block_hash_to_block.get(block.block_hash) is block
        for block_hash, block in pool.cached_block_hash_to_block.items():
            assert block.block_hash == block_hash, f"cache entry of block {block.block_id}"

    def check_all_free(self) -> None:
        """Assert no request holds blocks and every block is free (cached or not)."""
        assert not self.req_to_blocks, f"requests still hold blocks: {list(self.req_to_blocks)}"
        self.check_invariants()
        assert self.block_pool.num_free_blocks == self.block_pool.num_blocks
