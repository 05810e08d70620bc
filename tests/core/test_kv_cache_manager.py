from __future__ import annotations

from pagedllm.core.kv_cache_manager import KVCacheManager
from pagedllm.core.request import Request

from tests.helpers.core_fakes import make_request

BS = 4


def _admit(kvm: KVCacheManager, request: Request) -> list[int] | None:
    """What the scheduler does for a waiting request whose whole prompt fits the budget."""
    hits, num_hit = kvm.get_computed_blocks(request)
    block_ids = kvm.allocate_slots(request, request.num_tokens - num_hit, hits, num_hit)
    if block_ids is not None:
        request.num_computed_tokens = request.num_tokens
    return block_ids


def test_allocate_returns_only_new_block_ids() -> None:
    kvm = KVCacheManager(8, BS, enable_prefix_caching=False)
    request = make_request(list(range(6)))
    assert kvm.allocate_slots(request, 6) == [0, 1]
    request.num_computed_tokens = 6
    request.append_output_token_ids([100])
    assert kvm.allocate_slots(request, 1) == []  # token 7 fits in block 1
    request.num_computed_tokens = 7
    request.append_output_token_ids([101, 102])
    assert kvm.allocate_slots(request, 2) == [2]
    assert kvm.get_block_ids(request.request_id) == [0, 1, 2]
    kvm.free(request)
    kvm.check_all_free()


def test_prefix_hit_shares_blocks() -> None:
    kvm = KVCacheManager(16, BS, enable_prefix_caching=True)
    prompt = list(range(10))  # 2 full blocks + a partial one
    a = make_request(prompt)
    a_ids = _admit(kvm, a)
    assert a_ids is not None and len(a_ids) == 3
    a_blocks = kvm.req_to_blocks[a.request_id]
    assert a_blocks[2].block_hash is None  # the partial last block is never cached
    b = make_request(prompt)
    hits, num_hit = kvm.get_computed_blocks(b)
    assert num_hit == 8 and hits == a_blocks[:2]
    b_ids = kvm.allocate_slots(b, 2, hits, num_hit)
    assert b_ids is not None and b_ids[:2] == a_ids[:2] and b_ids[2] != a_ids[2]
    assert [blk.ref_cnt for blk in a_blocks] == [2, 2, 1]
    assert kvm.prefix_cache_queries == 20 and kvm.prefix_cache_hits == 8
    kvm.check_invariants()
    kvm.free(a)
    assert [blk.ref_cnt for blk in a_blocks] == [1, 1, 0]
    kvm.free(b)
    kvm.check_all_free()


def test_full_prompt_hit_recomputes_last_block() -> None:
    kvm = KVCacheManager(16, BS, enable_prefix_caching=True)
    prompt = list(range(8))  # exactly 2 full blocks
    a = make_request(prompt)
    _admit(kvm, a)
    b = make_request(prompt)
    hits, num_hit = kvm.get_computed_blocks(b)
    assert num_hit == 4 and len(hits) == 1  # never the whole prompt: we need the last logits


def test_cached_blocks_survive_until_reallocated_lru() -> None:
    kvm = KVCacheManager(6, BS, enable_prefix_caching=True)
    prompt = list(range(12))  # 3 full blocks
    a = make_request(prompt)
    _admit(kvm, a)
    b = make_request(prompt)
    _admit(kvm, b)  # hits 2 blocks, allocates 1 own
    kvm.free(a)  # shared blocks still held by b: nothing evictable
    assert len(kvm.block_pool.cached_block_hash_to_block) == 3
    kvm.free(b)
    kvm.check_all_free()
    # Freed tail-first: the first block of the prompt is the last one to be evicted.
    c = make_request([50 + i for i in range(12)])
    # Free queue: [4, 5, a's 3rd block, b's 3rd block (an uncached duplicate), 2nd, 1st].
    assert _admit(kvm, c) is not None  # takes 4, 5 and evicts the prompt's 3rd block
    d = make_request(prompt)
    hits, num_hit = kvm.get_computed_blocks(d)
    assert num_hit == 8  # the first two prompt blocks are still cached
    e = make_request([90 + i for i in range(8)])
    assert _admit(kvm, e) is not None  # takes the duplicate, then evicts the 2nd prompt block
    hits, num_hit = kvm.get_computed_blocks(d)
    assert num_hit == 4
    kvm.free(c)
    kvm.free(e)
    kvm.check_all_free()


def test_failed_allocation_changes_nothing() -> None:
    kvm = KVCacheManager(4, BS, enable_prefix_caching=True)
    a = make_request(list(range(8)))
    _admit(kvm, a)
    kvm.free(a)
    b = make_request(list(range(8)) + list(range(100, 112)))  # needs 5 blocks, 1 of them a hit
    hits, num_hit = kvm.get_computed_blocks(b)
    assert num_hit == 8
    assert kvm.allocate_slots(b, b.num_tokens - num_hit, hits, num_hit) is None
    assert b.request_id not in kvm.req_to_blocks
    assert all(blk.ref_cnt == 0 for blk in hits)
    kvm.check_all_free()


def test_hit_blocks_in_free_queue_count_against_free_blocks() -> None:
    kvm = KVCacheManager(3, BS, enable_prefix_caching=True)
    a = make_request(list(range(9)))  # 3 blocks, 2 cached
    _admit(kvm, a)
    kvm.free(a)
    b = make_request(list(range(9)))
    hits, num_hit = kvm.get_computed_blocks(b)
    assert num_hit == 8
    # 2 hit blocks + 1 new = all 3 blocks of the pool: fits exactly.
    assert kvm.allocate_slots(b, 1, hits, num_hit) is not None
    assert kvm.num_free_blocks == 0 and kvm.usage == 1.0
    kvm.check_invariants()


def test_prompt_logprobs_and_disabled_caching_skip_lookup() -> None:
    kvm = KVCacheManager(16, BS, enable_prefix_caching=True)
    _admit(kvm, make_request(list(range(10))))
    assert kvm.get_computed_blocks(make_request(list(range(10)), prompt_logprobs=1)) == ([], 0)
    off = KVCacheManager(16, BS, enable_prefix_caching=False)
    a = make_request(list(range(10)))
    _admit(off, a)
    assert not off.block_pool.cached_block_hash_to_block and not a.block_hashes
    assert off.get_computed_blocks(make_request(list(range(10)))) == ([], 0)
    assert off.prefix_cache_queries == 0


def test_decode_fills_and_caches_blocks() -> None:
    kvm = KVCacheManager(8, BS, enable_prefix_caching=True)
    a = make_request([1, 2, 3])
    _admit(kvm, a)
    for token in (4, 5, 6):  # sample, then schedule the sampled token
        a.append_output_token_ids([token])
        assert kvm.allocate_slots(a, 1) is not None
        a.num_computed_tokens += 1
    # 6 tokens: block 0 ([1, 2, 3, 4]) is full and cached, block 1 is not.
    blocks = kvm.req_to_blocks[a.request_id]
    assert blocks[0].block_hash is not None and blocks[1].block_hash is None
    b = make_request([1, 2, 3, 4, 9])
    assert kvm.get_computed_blocks(b)[1] == 4


def test_reset_prefix_cache() -> None:
    kvm = KVCacheManager(8, BS, enable_prefix_caching=True)
    a = make_request(list(range(8)))
    _admit(kvm, a)
    assert not kvm.reset_prefix_cache()
    kvm.free(a)
    assert kvm.reset_prefix_cache()
    assert kvm.get_computed_blocks(make_request(list(range(8))))[1] == 0
    kvm.check_all_free()
