from __future__ import annotations

import time

import pytest

from pagedllm.core.block_hash import hash_block_tokens, update_block_hashes
from pagedllm.core.block_pool import BlockPool, FreeBlockQueue, KVCacheBlock

from tests.helpers.core_fakes import make_request


def _ids(queue: FreeBlockQueue) -> list[int]:
    return [block.block_id for block in queue.get_all_free_blocks()]


def test_free_queue_is_lru() -> None:
    blocks = [KVCacheBlock(i) for i in range(6)]
    queue = FreeBlockQueue(blocks)
    assert _ids(queue) == [0, 1, 2, 3, 4, 5]
    taken = queue.popleft_n(3)
    assert [b.block_id for b in taken] == [0, 1, 2]
    assert queue.popleft().block_id == 3
    # Freed blocks go to the tail, in the order they are freed.
    queue.append(blocks[2])
    queue.append(blocks[0])
    assert _ids(queue) == [4, 5, 2, 0]
    assert queue.num_free_blocks == 4


def test_free_queue_remove_from_middle() -> None:
    blocks = [KVCacheBlock(i) for i in range(5)]
    queue = FreeBlockQueue(blocks)
    queue.remove(blocks[2])
    assert blocks[2].prev_free is None and blocks[2].next_free is None
    queue.remove(blocks[0])
    queue.remove(blocks[4])
    assert _ids(queue) == [1, 3]
    assert queue.num_free_blocks == 2
    queue.append(blocks[2])
    assert _ids(queue) == [1, 3, 2]
    assert [b.block_id for b in queue.popleft_n(3)] == [1, 3, 2]
    assert _ids(queue) == [] and queue.num_free_blocks == 0


def test_free_queue_remove_is_constant_time() -> None:
    n = 50_000
    blocks = [KVCacheBlock(i) for i in range(n)]
    queue = FreeBlockQueue(blocks)
    start = time.perf_counter()
    for block in blocks[n // 4: 3 * n // 4]:  # all from the middle
        queue.remove(block)
    # A linear-time remove would take seconds here; O(1) takes ~10 ms.
    assert time.perf_counter() - start < 0.5
    assert queue.num_free_blocks == n // 2


def test_new_blocks_evict_their_hash() -> None:
    pool = BlockPool(4, enable_caching=True)
    blocks = pool.get_new_blocks(2)
    assert [b.ref_cnt for b in blocks] == [1, 1]
    h0 = hash_block_tokens(None, [1, 2])
    h1 = hash_block_tokens(h0, [3, 4])
    pool.cache_full_blocks(blocks, [h0, h1], 0, 2)
    assert pool.get_cached_block(h0) is blocks[0] and pool.get_cached_block(h1) is blocks[1]
    pool.free_blocks(reversed(blocks))  # tail block first: evicted first
    assert _ids(pool.free_block_queue) == [2, 3, 1, 0]
    assert pool.get_cached_block(h1) is blocks[1]  # free but still cached
    pool.get_new_blocks(3)  # takes 2, 3, then 1: evicts h1 only
    assert pool.get_cached_block(h1) is None and blocks[1].block_hash is None
    assert pool.get_cached_block(h0) is blocks[0]


def test_touch_takes_free_cached_block_out_of_queue() -> None:
    pool = BlockPool(3, enable_caching=True)
    [block] = pool.get_new_blocks(1)
    pool.cache_full_blocks([block], [123], 0, 1)
    pool.free_blocks([block])
    assert pool.num_free_blocks == 3 and pool.usage == 0.0
    pool.touch([block])
    assert block.ref_cnt == 1 and pool.num_free_blocks == 2
    pool.touch([block])
    assert block.ref_cnt == 2 and pool.num_free_blocks == 2
    assert abs(pool.usage - 1 / 3) < 1e-9


def test_duplicate_content_keeps_one_cached_block() -> None:
    pool = BlockPool(4, enable_caching=True)
    a, b = pool.get_new_blocks(2)
    pool.cache_full_blocks([a], [99], 0, 1)
    pool.cache_full_blocks([b], [99], 0, 1)
    assert pool.get_cached_block(99) is a and b.block_hash is None


def test_reset_prefix_cache() -> None:
    pool = BlockPool(2, enable_caching=True)
    [block] = pool.get_new_blocks(1)
    pool.cache_full_blocks([block], [5], 0, 1)
    assert not pool.reset_prefix_cache()  # a block is in use
    pool.free_blocks([block])
    assert pool.reset_prefix_cache()
    assert pool.get_cached_block(5) is None and block.block_hash is None


def test_block_hashes_are_incremental_and_chained() -> None:
    request = make_request(list(range(10)))
    assert update_block_hashes(request, 4) == 2  # 10 tokens: 2 full blocks
    h0, h1 = request.block_hashes
    assert h0 == hash_block_tokens(None, [0, 1, 2, 3])
    assert h1 == hash_block_tokens(h0, [4, 5, 6, 7])
    assert update_block_hashes(request, 4) == 0
    request.append_output_token_ids([10, 11])
    assert update_block_hashes(request, 4) == 1
    assert request.block_hashes[:2] == [h0, h1]
    # Same tokens after a different prefix hash differently.
    other = make_request([9, 9, 9, 9, 4, 5, 6, 7])
    update_block_hashes(other, 4)
    assert other.block_hashes[1] != h1
    assert hash_block_tokens(None, [0, 1, 2, 3], ("lora", 1)) != h0


def test_sha256_block_hashes_chain_and_differ_from_builtin() -> None:
    from pagedllm.core.block_hash import get_block_hasher, hash_block_tokens_sha256

    sha = get_block_hasher("sha256")
    h0 = sha(None, [1, 2, 3, 4], None)
    assert isinstance(h0, bytes) and len(h0) == 32
    assert sha(None, [1, 2, 3, 4], None) == h0  # deterministic (also across processes)
    assert sha(h0, [5, 6, 7, 8], None) != sha(None, [5, 6, 7, 8], None)  # the parent is covered
    assert sha(None, [1, 2, 3, 4], ("lora-1",)) != h0  # and the extra keys
    assert sha(None, [1, 2, 3, 5], None) != h0
    assert hash_block_tokens_sha256(None, [2**40, 1], None) != hash_block_tokens_sha256(None, [1, 2**40], None)
    with pytest.raises(ValueError, match="prefix_caching_hash_algo"):
        get_block_hasher("md5")
