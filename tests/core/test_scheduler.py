from __future__ import annotations

import pytest

from pagedllm.config import CacheConfig, SchedulerConfig
from pagedllm.core.request import RequestStatus
from pagedllm.core.scheduler import Scheduler
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.outputs import EngineCoreOutput, ModelRunnerOutput

from tests.helpers.core_fakes import FakeRunner, make_request

BS = 4


def _scheduler(
    num_blocks: int = 64,
    max_num_batched_tokens: int = 64,
    max_num_seqs: int = 16,
    max_model_len: int = 128,
    caching: bool = True,
) -> Scheduler:
    return Scheduler(
        SchedulerConfig(max_num_seqs, max_num_batched_tokens, max_model_len),
        CacheConfig(block_size=BS, enable_prefix_caching=caching),
        num_blocks,
    )


def _step(sched: Scheduler, runner: FakeRunner) -> tuple[SchedulerOutput, list[EngineCoreOutput]]:
    out = sched.schedule()
    outs = sched.update_from_output(out, runner.execute(out))
    sched.kv_cache_manager.check_invariants()
    return out, outs


def test_chunked_prefill_arithmetic() -> None:
    sched = _scheduler(max_num_batched_tokens=8)
    runner = FakeRunner(BS)
    request = make_request(list(range(20)), max_tokens=2)
    sched.add_request(request)
    out, outs = _step(sched, runner)
    [new] = out.scheduled_new_reqs
    assert new.num_computed_tokens == 0 and len(new.block_ids) == 2
    assert out.num_scheduled_tokens == {request.request_id: 8} and outs == []
    out, outs = _step(sched, runner)
    cached = out.scheduled_cached_reqs
    assert cached.num_computed_tokens == [8] and cached.new_block_ids == [[2, 3]] and outs == []
    out, outs = _step(sched, runner)
    assert out.num_scheduled_tokens == {request.request_id: 4}
    assert cached.num_computed_tokens == [8]  # the previous step's output is left untouched
    assert out.scheduled_cached_reqs.num_computed_tokens == [16]
    assert [o.new_token_ids for o in outs] == [[7]]  # the prompt is complete: a token is sampled
    out, outs = _step(sched, runner)
    assert out.num_scheduled_tokens == {request.request_id: 1}
    assert outs[0].finish_reason == "length" and request.num_output_tokens == 2
    assert not sched.has_unfinished_requests()
    assert sched.schedule().finished_req_ids == {request.request_id}
    sched.kv_cache_manager.check_all_free()


def test_prefill_and_decode_in_one_step() -> None:
    sched = _scheduler(max_num_batched_tokens=8)
    runner = FakeRunner(BS)
    a = make_request([1, 2, 3], max_tokens=5)
    sched.add_request(a)
    _step(sched, runner)  # a's prompt, first token sampled
    b = make_request(list(range(10, 30)), max_tokens=5)
    sched.add_request(b)
    out, outs = _step(sched, runner)
    # Running first: a decodes 1 token, b's prompt gets the 7 left of the budget.
    assert out.num_scheduled_tokens == {a.request_id: 1, b.request_id: 7}
    assert list(out.num_scheduled_tokens) == [a.request_id, b.request_id]
    assert out.total_num_scheduled_tokens == 8
    assert [o.request_id for o in outs] == [a.request_id]
    assert b.num_computed_tokens == 7 and b.status == RequestStatus.RUNNING


def test_prefix_hit_on_admission() -> None:
    sched = _scheduler()
    runner = FakeRunner(BS)
    prompt = list(range(10))
    a = make_request(prompt, max_tokens=3)
    sched.add_request(a)
    _step(sched, runner)
    b = make_request(prompt, max_tokens=3)
    sched.add_request(b)
    out, _ = _step(sched, runner)
    [new] = out.scheduled_new_reqs
    assert new.num_computed_tokens == 8 and out.num_scheduled_tokens[b.request_id] == 2
    assert b.num_cached_tokens == 8 and a.num_cached_tokens == 0
    assert new.block_ids[:2] == sched.kv_cache_manager.get_block_ids(a.request_id)[:2]
    while sched.has_unfinished_requests():
        _step(sched, runner)
    sched.kv_cache_manager.check_all_free()


def test_prompt_logprobs_request_skips_prefix_cache() -> None:
    sched = _scheduler()
    runner = FakeRunner(BS)
    prompt = list(range(10))
    sched.add_request(make_request(prompt, max_tokens=3))
    _step(sched, runner)
    b = make_request(prompt, max_tokens=3, prompt_logprobs=2)
    sched.add_request(b)
    out, outs = _step(sched, runner)
    assert out.scheduled_new_reqs[0].num_computed_tokens == 0 and b.num_cached_tokens == 0
    [b_out] = [o for o in outs if o.request_id == b.request_id]
    assert b_out.new_prompt_logprobs is not None and len(b_out.new_prompt_logprobs) == 10


def test_prompt_logprobs_reported_for_partial_chunks() -> None:
    sched = _scheduler(max_num_batched_tokens=4)
    runner = FakeRunner(BS)
    request = make_request(list(range(10)), max_tokens=1, prompt_logprobs=0)
    sched.add_request(request)
    _, outs = _step(sched, runner)
    assert outs[0].new_token_ids == [] and outs[0].new_prompt_logprobs is not None


def test_preemption_under_tiny_pool() -> None:
    sched = _scheduler(num_blocks=4, caching=False)
    runner = FakeRunner(BS)
    a = make_request(list(range(7)), max_tokens=6, ignore_eos=True)
    b = make_request(list(range(100, 107)), max_tokens=6, ignore_eos=True)
    sched.add_request(a)
    sched.add_request(b)
    out, _ = _step(sched, runner)  # 2 blocks each: the pool is full
    assert len(out.scheduled_new_reqs) == 2 and sched.kv_cache_manager.num_free_blocks == 0
    _step(sched, runner)  # 8 tokens each: still 2 blocks
    out, _ = _step(sched, runner)  # a needs a 3rd block: b, the latest arrival, is preempted
    assert out.preempted_req_ids == {b.request_id}
    assert out.num_scheduled_tokens == {a.request_id: 1}
    assert b.status == RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert b.num_preemptions == 1 and sched.num_preemptions == 1
    assert list(sched.waiting) == [b] and sched.running == [a]
    num_b_outputs = b.num_output_tokens
    while a.status == RequestStatus.RUNNING:
        out, _ = _step(sched, runner)
        assert b.request_id not in out.num_scheduled_tokens
    assert a.num_output_tokens == 6
    out, _ = _step(sched, runner)  # b resumes with its output so far, recomputed from 0
    [new] = out.scheduled_new_reqs
    assert new.req_id == b.request_id and new.num_computed_tokens == 0
    assert new.output_token_ids == b.output_token_ids[:num_b_outputs]
    assert out.num_scheduled_tokens[b.request_id] == 7 + num_b_outputs
    while sched.has_unfinished_requests():
        _step(sched, runner)
    assert b.num_output_tokens == 6 and b.get_finish_reason() == "length"
    sched.kv_cache_manager.check_all_free()


def test_self_preemption_stops_the_step() -> None:
    sched = _scheduler(num_blocks=3, caching=False)
    runner = FakeRunner(BS)
    a = make_request(list(range(8)), max_tokens=4, ignore_eos=True)
    b = make_request(list(range(4)), max_tokens=4, ignore_eos=True)
    sched.add_request(a)
    sched.add_request(b)
    _step(sched, runner)  # a: 2 blocks, b: 1 block
    # a needs a 3rd block: preempts b; then b is gone and a runs alone.
    out, _ = _step(sched, runner)
    assert out.preempted_req_ids == {b.request_id} and out.scheduled_new_reqs == []
    sched.finish_requests(a.request_id, RequestStatus.FINISHED_ABORTED)
    out, _ = _step(sched, runner)
    assert a.request_id in out.finished_req_ids
    assert out.scheduled_new_reqs[0].req_id == b.request_id


def test_running_request_preempts_itself_when_last() -> None:
    sched = _scheduler(num_blocks=4, caching=False)
    runner = FakeRunner(BS)
    a = make_request(list(range(4)), max_tokens=8, ignore_eos=True)
    c = make_request(list(range(50, 57)), max_tokens=8, ignore_eos=True)
    sched.add_request(a)
    sched.add_request(c)
    _step(sched, runner)  # a: 1 block, c: 2 blocks
    _step(sched, runner)  # a takes the last free block for its 5th token
    # c needs a 3rd block; a (scheduled first) keeps its blocks, c is the only victim left.
    out, _ = _step(sched, runner)
    assert out.preempted_req_ids == {c.request_id}
    assert out.num_scheduled_tokens == {a.request_id: 1}
    assert list(sched.waiting) == [c] and c.num_computed_tokens == 0
    while sched.has_unfinished_requests():
        _step(sched, runner)
    assert a.num_output_tokens == c.num_output_tokens == 8
    sched.kv_cache_manager.check_all_free()


def test_request_outgrowing_the_whole_pool_is_length_capped() -> None:
    sched = _scheduler(num_blocks=3, caching=False)
    runner = FakeRunner(BS)
    a = make_request(list(range(8)), max_tokens=20, ignore_eos=True)
    sched.add_request(a)
    outs: list[EngineCoreOutput] = []
    for _ in range(5):  # prefill + 4 decodes: 12 tokens computed, 13 known
        _, outs = _step(sched, runner)
    assert a.num_tokens == 13 and a.status == RequestStatus.RUNNING
    out, outs = _step(sched, runner)  # the 13th token needs a 4th block
    assert out.is_empty and out.finished_req_ids == {a.request_id} and not out.preempted_req_ids
    assert [(o.request_id, o.new_token_ids, o.finish_reason) for o in outs] == [(a.request_id, [], "length")]
    assert not sched.has_unfinished_requests()
    sched.kv_cache_manager.check_all_free()


def test_max_num_seqs() -> None:
    sched = _scheduler(max_num_seqs=2)
    runner = FakeRunner(BS)
    for i in range(3):
        sched.add_request(make_request([i, i, i], max_tokens=2))
    out, _ = _step(sched, runner)
    assert len(out.scheduled_new_reqs) == 2 and sched.num_running == 2 and sched.num_waiting == 1


def test_max_model_len_caps_chunks_and_length() -> None:
    sched = _scheduler(max_model_len=12)
    runner = FakeRunner(BS)
    request = make_request(list(range(10)), max_tokens=100)
    sched.add_request(request)
    outs: list[EngineCoreOutput] = []
    while sched.has_unfinished_requests():
        _, outs = _step(sched, runner)
    assert request.num_tokens == 12 and outs[0].finish_reason == "length"


def test_add_request_validation() -> None:
    sched = _scheduler(num_blocks=4, max_model_len=64)
    with pytest.raises(ValueError):
        sched.add_request(make_request(list(range(65))))
    with pytest.raises(ValueError):  # the prompt alone needs 5 blocks
        sched.add_request(make_request(list(range(20))))
    sched.add_request(make_request([1], req_id="x", max_tokens=60))  # may outgrow: allowed
    with pytest.raises(ValueError):
        sched.add_request(make_request([1], req_id="x"))


def test_abort_waiting_and_running() -> None:
    sched = _scheduler(max_num_seqs=1)
    runner = FakeRunner(BS)
    a = make_request([1, 2, 3], max_tokens=5)
    b = make_request([4, 5, 6], max_tokens=5)
    sched.add_request(a)
    sched.add_request(b)
    _step(sched, runner)
    sched.finish_requests([a.request_id, b.request_id, "unknown"], RequestStatus.FINISHED_ABORTED)
    assert a.get_finish_reason() == "abort" and b.get_finish_reason() == "abort"
    assert not sched.has_unfinished_requests() and sched.get_num_unfinished_requests() == 0
    out = sched.schedule()
    assert out.finished_req_ids == {a.request_id}  # b never reached the runner
    assert out.is_empty
    sched.kv_cache_manager.check_all_free()


def test_outputs_for_requests_aborted_mid_step_are_dropped() -> None:
    sched = _scheduler()
    runner = FakeRunner(BS)
    a = make_request([1, 2, 3], max_tokens=5)
    b = make_request([4, 5, 6], max_tokens=5)
    sched.add_request(a)
    sched.add_request(b)
    out = sched.schedule()
    runner_out = runner.execute(out)
    sched.finish_requests(a.request_id, RequestStatus.FINISHED_ABORTED)
    outs = sched.update_from_output(out, runner_out)
    assert [o.request_id for o in outs] == [b.request_id]
    assert a.output_token_ids == []


def test_stop_token_in_update_from_output() -> None:
    sched = _scheduler()
    request = make_request([1, 2], max_tokens=10, eos_token_id=2, stop_token_ids=[9])
    sched.add_request(request)
    out = sched.schedule()
    outs = sched.update_from_output(out, ModelRunnerOutput([request.request_id], [[9]]))
    assert outs[0].finish_reason == "stop" and outs[0].stop_reason == 9
    assert outs[0].new_token_ids == [9] and sched.num_running == 0


def test_several_tokens_are_cut_at_a_stop() -> None:
    sched = _scheduler()
    request = make_request([1, 2], max_tokens=10, eos_token_id=2)
    sched.add_request(request)
    out = sched.schedule()
    outs = sched.update_from_output(out, ModelRunnerOutput([request.request_id], [[5, 2, 6]]))
    assert outs[0].new_token_ids == [5, 2] and request.output_token_ids == [5, 2]


class _FailedGrammars:
    """Grammar hooks whose every grammar failed to compile."""

    def ready(self, request): return True  # noqa: E704
    def failure(self, request): return "no grammar for you"  # noqa: E704
    def release(self, request): self.released = request.request_id  # noqa: E704


def test_a_request_whose_grammar_failed_ends_with_the_reason_for_the_client() -> None:
    grammars = _FailedGrammars()
    sched = Scheduler(SchedulerConfig(16, 64, 128), CacheConfig(block_size=BS), 64, grammars=grammars)
    constrained = make_request(list(range(6)), req_id="constrained")
    constrained.structured = object()  # the manager's state of a constrained request
    plain = make_request(list(range(6)), max_tokens=1, req_id="plain")
    sched.add_request(constrained)
    sched.add_request(plain)
    out, outs = _step(sched, FakeRunner(BS))
    assert list(out.num_scheduled_tokens) == ["plain"]  # the rest of the batch runs
    assert {o.request_id: o.finish_reason for o in outs}["constrained"] == "abort"
    assert sched.take_errors() == {
        "constrained": "The structured output constraint could not be compiled: no grammar for you"}
    assert sched.take_errors() == {} and grammars.released == "constrained"
