"""The scheduler with speculative decoding: drafts are scheduled tokens, rejected ones are taken
back, only accepted tokens reach the prefix cache, and big batches run without drafts."""
from __future__ import annotations

from pagedllm.config import CacheConfig, SchedulerConfig
from pagedllm.core.request import RequestStatus
from pagedllm.core.scheduler import Scheduler
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.outputs import ModelRunnerOutput
from pagedllm.spec_decode.config import SpeculativeConfig

from tests.helpers.core_fakes import make_request

BS = 4


def _scheduler(num_blocks: int = 64, budget: int = 64, max_model_len: int = 128, **spec) -> Scheduler:
    config = SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 3, **spec})
    return Scheduler(SchedulerConfig(16, budget, max_model_len), CacheConfig(block_size=BS), num_blocks, config)


def _run(sched: Scheduler, out: SchedulerOutput, sampled: dict[str, list[int]],
         drafts: dict[str, list[int]] | None = None) -> list:
    ids = list(out.num_scheduled_tokens)
    runner_out = ModelRunnerOutput(ids, [sampled.get(i, []) for i in ids], spec_token_ids=drafts or {})
    return sched.update_from_output(out, runner_out)


def _prefill(sched: Scheduler, request, first_token: int, drafts: list[int]) -> None:
    sched.add_request(request)
    out = sched.schedule()
    _run(sched, out, {request.request_id: [first_token]}, {request.request_id: drafts})


def test_drafts_are_scheduled_and_rejected_ones_taken_back():
    sched = _scheduler()
    r = make_request(list(range(10, 18)), max_tokens=20)
    _prefill(sched, r, 50, [51, 52, 53])
    assert r.num_computed_tokens == 8 and r.spec_token_ids == [51, 52, 53]
    out = sched.schedule()
    assert out.num_scheduled_tokens == {r.request_id: 4}  # the last token and three drafts
    assert out.scheduled_spec_decode_tokens == {r.request_id: [51, 52, 53]}
    assert r.num_computed_tokens == 12 and r.spec_token_ids == []
    # 51 and 52 accepted, 60 is the target's own token instead of 53
    [core_out] = _run(sched, out, {r.request_id: [51, 52, 60]})
    assert core_out.new_token_ids == [51, 52, 60]
    assert r.output_token_ids == [50, 51, 52, 60]
    assert r.num_computed_tokens == 11 == r.num_tokens - 1  # 53's slot is computed again
    stats = sched.spec_decoding_stats
    assert (stats.num_drafts, stats.num_draft_tokens, stats.num_accepted_tokens) == (1, 3, 2)
    assert stats.num_accepted_tokens_per_pos == [1, 1, 0]
    out = sched.schedule()  # no drafts this time: a plain decode step
    assert out.num_scheduled_tokens == {r.request_id: 1} and not out.scheduled_spec_decode_tokens


def test_only_accepted_tokens_are_hashed_for_the_prefix_cache():
    sched = _scheduler()
    r = make_request(list(range(10, 16)), max_tokens=20)  # 6 prompt tokens
    _prefill(sched, r, 50, [51, 52, 53])  # 7 tokens: block 0 full
    out = sched.schedule()  # positions 6..9: the drafts would fill block 1
    cached = sched.kv_cache_manager.block_pool.cached_block_hash_to_block
    assert len(r.block_hashes) == 1 and len(cached) == 1  # the drafts never count as the request's tokens
    _run(sched, out, {r.request_id: [70]})  # all three rejected
    assert r.output_token_ids == [50, 70] and r.num_computed_tokens == 7
    assert len(r.block_hashes) == 2 and len(cached) == 1  # block 1 = 14 15 50 70, computed up to 50 only
    sched.schedule()  # computes 70: block 1 is complete and cached under its accepted tokens
    assert r.block_hashes[1] in cached and len(cached) == 2


def test_the_budget_and_max_tokens_cut_drafts():
    sched = _scheduler(budget=3)
    r = make_request(list(range(8)), max_tokens=20)
    sched.add_request(r)
    for _ in range(3):  # a prompt of 8 in chunks of 3
        out = sched.schedule()
        _run(sched, out, {r.request_id: [50]} if r.num_computed_tokens == 8 else {}, {r.request_id: [1, 2, 3]})
    out = sched.schedule()
    assert out.scheduled_spec_decode_tokens == {r.request_id: [1, 2]}  # 3 tokens: the last and two drafts
    short = _scheduler()
    q = make_request(list(range(8)), max_tokens=3)
    _prefill(short, q, 50, [1, 2, 3])
    out = short.schedule()
    assert out.scheduled_spec_decode_tokens == {q.request_id: [1]}  # 2 tokens left: one draft + the target's


def test_a_stop_inside_the_run_ends_it_there():
    sched = _scheduler()
    r = make_request(list(range(8)), max_tokens=20, eos_token_id=99)
    _prefill(sched, r, 50, [51, 99, 53])
    out = sched.schedule()
    [core_out] = _run(sched, out, {r.request_id: [51, 99, 53, 54]})
    assert core_out.new_token_ids == [51, 99] and core_out.finish_reason == "stop"
    assert r.status == RequestStatus.FINISHED_STOPPED
    assert sched.schedule().finished_req_ids == {r.request_id}
    sched.kv_cache_manager.check_all_free()


def test_preemption_drops_the_drafts():
    sched = _scheduler(num_blocks=5)
    first, second = make_request(list(range(8)), max_tokens=20), make_request(list(range(30, 38)), max_tokens=20)
    sched.add_request(first)
    sched.add_request(second)
    out = sched.schedule()
    _run(sched, out, {first.request_id: [50], second.request_id: [60]},
         {first.request_id: [1, 2, 3, 4, 5][:3], second.request_id: [6, 7, 8]})
    out = sched.schedule()  # both need a third block; only one is free: the later arrival goes
    assert second.request_id in out.preempted_req_ids
    assert second.spec_token_ids == [] and second.status == RequestStatus.PREEMPTED
    assert out.scheduled_spec_decode_tokens == {first.request_id: [1, 2, 3]}


def test_big_batches_run_without_drafts():
    sched = _scheduler(disable_by_batch_size=2)
    reqs = [make_request(list(range(i, i + 8)), max_tokens=20) for i in (0, 40)]
    for r in reqs:
        sched.add_request(r)
    out = sched.schedule()
    _run(sched, out, {r.request_id: [50] for r in reqs}, {r.request_id: [1, 2] for r in reqs})
    out = sched.schedule()
    assert not out.scheduled_spec_decode_tokens
    assert out.num_scheduled_tokens == {r.request_id: 1 for r in reqs}
    assert all(r.spec_token_ids == [] for r in reqs)


def test_a_draft_model_gets_lookahead_slots_that_no_block_is_cached_for():
    config = SpeculativeConfig.from_user({"method": "draft_model", "model": "/m", "num_speculative_tokens": 3})
    sched = Scheduler(SchedulerConfig(16, 6, 128), CacheConfig(block_size=BS), 64, config)
    r = make_request(list(range(10, 20)), max_tokens=20)  # 10 tokens in chunks of 6
    sched.add_request(r)
    out = sched.schedule()
    # 6 tokens + 3 lookahead slots: 3 blocks, but only block 0 (tokens 0..3) is complete and computed
    assert len(out.scheduled_new_reqs[0].block_ids) == 3
    assert len(sched.kv_cache_manager.block_pool.cached_block_hash_to_block) == 1
    _run(sched, out, {})
    out = sched.schedule()  # the last 4 prompt tokens, + 3 slots: positions up to 12, 4 blocks
    assert out.scheduled_cached_reqs.new_block_ids == [[3]]
    assert len(sched.kv_cache_manager.block_pool.cached_block_hash_to_block) == 2  # tokens 0..7
