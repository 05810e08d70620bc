"""Asynchronous scheduling in the scheduler: step N+1 is scheduled before step N's tokens arrive."""
from __future__ import annotations

from pagedllm.config import CacheConfig, SchedulerConfig
from pagedllm.core.request import RequestStatus
from pagedllm.core.scheduler import Scheduler

from tests.helpers.core_fakes import FakeRunner, make_request

BS = 4
EOS = 0


def _scheduler(num_blocks: int = 64, caching: bool = True) -> Scheduler:
    return Scheduler(SchedulerConfig(16, 64, 128, async_scheduling=True),
                     CacheConfig(block_size=BS, enable_prefix_caching=caching), num_blocks)


def test_decode_is_scheduled_on_a_placeholder_before_its_token_arrives() -> None:
    sched, runner = _scheduler(), FakeRunner(BS)
    request = make_request([1, 2, 3, 4, 5], max_tokens=4, ignore_eos=True)
    sched.add_request(request)
    out0 = sched.schedule()  # the prompt; its last position samples token 0
    res0 = runner.execute(out0)
    assert request.num_output_placeholders == 1
    out1 = sched.schedule()  # token 0's position, before token 0 is known here
    assert out1.num_scheduled_tokens == {request.request_id: 1}
    assert out1.scheduled_cached_reqs.num_computed_tokens == [5]
    assert request.num_output_placeholders == 2 and request.num_output_tokens == 0
    res1 = runner.execute(out1)
    [o] = sched.update_from_output(out0, res0)
    assert o.new_token_ids == [7] and request.num_output_placeholders == 1
    [o] = sched.update_from_output(out1, res1)
    assert o.new_token_ids == [7] and request.num_output_placeholders == 0


def test_no_step_is_scheduled_past_max_tokens() -> None:
    sched, runner = _scheduler(), FakeRunner(BS)
    request = make_request([1, 2, 3], max_tokens=2, ignore_eos=True)
    sched.add_request(request)
    steps = [(out := sched.schedule(), runner.execute(out))]
    steps.append((out := sched.schedule(), runner.execute(out)))  # the second (last) token
    assert sched.schedule().is_empty  # both tokens in flight: nothing more to compute
    outputs = [o for step in steps for o in sched.update_from_output(*step)]
    assert [o.new_token_ids for o in outputs] == [[7], [7]]
    assert outputs[-1].finish_reason == "length" and not sched.has_unfinished_requests()
    sched.kv_cache_manager.check_all_free()


def test_token_after_a_stop_is_dropped_and_blocks_freed() -> None:
    sched, runner = _scheduler(), FakeRunner(BS, sample_fn=lambda req_id, tokens: EOS)
    request = make_request([1, 2, 3], max_tokens=8, eos_token_id=EOS)
    sched.add_request(request)
    out0 = sched.schedule()
    res0 = runner.execute(out0)
    out1 = sched.schedule()  # scheduled before anyone knows token 0 is EOS
    res1 = runner.execute(out1)
    [o] = sched.update_from_output(out0, res0)
    assert o.finish_reason == "stop" and request.status == RequestStatus.FINISHED_STOPPED
    assert sched.update_from_output(out1, res1) == []  # the wasted step's token goes nowhere
    assert request.output_token_ids == [EOS]
    assert sched.schedule().finished_req_ids == {request.request_id}
    sched.kv_cache_manager.check_all_free()


def test_preemption_drops_the_token_in_flight() -> None:
    sched, runner = _scheduler(num_blocks=4, caching=False), FakeRunner(BS)
    a = make_request(list(range(7)), max_tokens=6, ignore_eos=True)
    b = make_request(list(range(100, 107)), max_tokens=6, ignore_eos=True)
    sched.add_request(a)
    sched.add_request(b)
    in_flight = [(out := sched.schedule(), runner.execute(out))]  # both prompts: the pool is full
    while b.status == RequestStatus.RUNNING:
        in_flight.append((out := sched.schedule(), runner.execute(out)))
        sched.update_from_output(*in_flight.pop(0))
    assert out.preempted_req_ids == {b.request_id}
    assert b.num_output_placeholders == 0 and b.num_computed_tokens == 0
    kept = list(b.output_token_ids)
    sched.update_from_output(*in_flight.pop(0))  # holds b's token sampled before the preemption
    assert b.output_token_ids == kept  # dropped: it is sampled again after the recompute
    while sched.has_unfinished_requests():
        in_flight.append((out := sched.schedule(), runner.execute(out)))
        sched.update_from_output(*in_flight.pop(0))
    for step in in_flight:
        sched.update_from_output(*step)
    assert a.num_output_tokens == b.num_output_tokens == 6
    sched.kv_cache_manager.check_all_free()
