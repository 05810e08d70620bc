"""The pool of KV blocks: reference counts, an LRU free queue and the prefix-cache index (no torch).

Every block is in exactly one of two states:

    in use   ref_cnt > 0    held by ref_cnt requests (a prefix-cache hit shares it, never copies it)
    free     ref_cnt == 0   linked in the free queue; it may still carry a hash and stay findable in
                            the cache until it is handed out again (then its hash is evicted)

    free queue:  head -> [evicted first ... evicted last] <- tail
                 allocate from the head, free to the tail, a prefix hit unlinks from the middle.

No block is reserved: all `num_blocks` ids are usable (no "null block"). A runner that needs a
padding slot (e.g. CUDA-graph padding) should mask writes with a negative slot id instead.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pagedllm.core.block_hash import BlockHash


@dataclass(slots=True, eq=False)
class KVCacheBlock:
    """One block of `block_size` KV slots. Identity (not value) equality: blocks are unique."""

    block_id: int
    ref_cnt: int = 0
    # Hash of the full block's content while the block is in the prefix cache, else None.
    # Invariant: block_hash is not None <=> the pool's cache maps block_hash to this very block.
    block_hash: BlockHash | None = None
    # Doubly-linked free queue pointers; meaningful only while ref_cnt == 0.
    prev_free: KVCacheBlock | None = None
    next_free: KVCacheBlock | None = None


class FreeBlockQueue:
    """Doubly-linked list of free blocks with O(1) popleft, append and remove-from-the-middle.

    A `collections.deque` cannot remove from the middle in O(1), which a prefix hit on a free
    cached block needs. Two sentinel blocks (id -1) remove all empty-list branches.
    """

    def __init__(self, blocks: list[KVCacheBlock]) -> None:
        self.num_free_blocks = len(blocks)
        self._head = KVCacheBlock(-1)
        self._tail = KVCacheBlock(-1)
        prev = self._head
        for block in blocks:
            prev.next_free = block
            block.prev_free = prev
            prev = block
        prev.next_free = self._tail
        self._tail.prev_free = prev

    def popleft(self) -> KVCacheBlock:
        """Take the least recently freed block."""
        block = self._head.next_free
        assert block is not None and block is not self._tail, "no free blocks"
        self.remove(block)
        return block

    def popleft_n(self, n: int) -> list[KVCacheBlock]:
        """Take the `n` least recently freed blocks, in queue order."""
        assert n <= self.num_free_blocks, "not enough free blocks"
        out: list[KVCacheBlock] = []
        block = self._head.next_free
        for _ in range(n):
            assert block is not None
            out.append(block)
            nxt = block.next_free
            block.prev_free = block.next_free = None
            block = nxt
        # Relink the head to the first block we did not take, once.
        assert block is not None
        self._head.next_free = block
        block.prev_free = self._head
        self.num_free_blocks -= n
        return out

    def remove(self, block: KVCacheBlock) -> None:
        """Unlink a block from anywhere in the queue in O(1)."""
        prev, nxt = block.prev_free, block.next_free
        assert prev is not None and nxt is not None, f"block {block.block_id} is not free"
        prev.next_free = nxt
        nxt.prev_free = prev
        block.prev_free = block.next_free = None
        self.num_free_blocks -= 1

    def append(self, block: KVCacheBlock) -> None:
        """Put a block at the tail: it will be evicted last."""
        last = self._tail.prev_free
        assert last is not None
        last.next_free = block
        block.prev_free = last
        block.next_free = self._tail
        self._tail.prev_free = block
        self.num_free_blocks += 1

    def __iter__(self) -> Iterator[KVCacheBlock]:
        block = self._head.next_free
        while block is not None and block is not self._tail:
            yield block
            block = block.next_free

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        """All free blocks from head (evicted first) to tail; for tests and debugging."""
        return list(self.__iter__())


class BlockPool:
    """Owns all KV blocks, their reference counts, the free queue and the hash -> block cache."""

    def __init__(self, num_blocks: int, enable_caching: bool) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be at least 1, got {num_blocks}.")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.free_block_queue = FreeBlockQueue(self.blocks)
        self.cached_block_hash_to_block: dict[BlockHash, KVCacheBlock] = {}
        # Prefix-cache counters, in tokens (queries = tokens looked up, hits = tokens found).
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0

    @property
    def num_free_blocks(self) -> int:
        """Blocks with ref_cnt 0, cached or not: all can be handed out."""
        return self.free_block_queue.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction of blocks in use (ref_cnt > 0); free cached blocks count as free."""
        return 1.0 - self.free_block_queue.num_free_blocks / self.num_blocks

    def get_cached_block(self, block_hash: BlockHash) -> KVCacheBlock | None:
        """The block holding this content, in use or free, or None."""
        return self.cached_block_hash_to_block.get(block_hash)

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """Take `num_blocks` blocks from the head of the free queue, evicting their cached hashes.

        The caller must have checked `num_free_blocks`. Returned blocks have ref_cnt 1.
        """
        blocks = self.free_block_queue.popleft_n(num_blocks)
        cache = self.cached_block_hash_to_block
        for block in blocks:
            if block.block_hash is not None:
                # Its content is about to be overwritten: it can no longer serve hits.
                del cache[block.block_hash]
                block.block_hash = None
            block.ref_cnt = 1
        return blocks

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Take one more reference on prefix-hit blocks, pulling free ones out of the queue."""
        remove = self.free_block_queue.remove
        for block in blocks:
            if block.ref_cnt == 0:
                remove(block)
            block.ref_cnt += 1

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference per block; blocks reaching 0 go to the queue tail in this order.

        Pass the blocks in the order they should be evicted (first = evicted first).
        """
        append = self.free_block_queue.append
        for block in ordered_blocks:
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                append(block)

    def cache_full_blocks(
        self,
        blocks: list[KVCacheBlock],
        block_hashes: list[BlockHash],
        num_cached_blocks: int,
        num_full_blocks: int,
    ) -> None:
        """Register blocks[num_cached_blocks:num_full_blocks] of one request in the cache.

        A block whose hash is already cached by another block (two requests computed the same
        content before either could hit) stays unregistered: it is freed as a plain block, and
        the cache keeps exactly one block per hash.
        """
        cache = self.cached_block_hash_to_block
        for i in range(num_cached_blocks, num_full_blocks):
            block = blocks[i]
            if block.block_hash is not None:  # a prefix hit: already in the cache
                continue
            block_hash = block_hashes[i]
            if block_hash not in cache:
                block.block_hash = block_hash
                cache[block_hash] = block

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash; refused (False) while any block is in use."""
        if self.num_free_blocks != self.num_blocks:
            return False
        for block in self.cached_block_hash_to_block.values():
            block.block_hash = None
        self.cached_block_hash_to_block.clear()
        return True
