"""Drive the scheduler with a fake runner over many random requests, aborts and a tiny KV pool."""
from __future__ import annotations

import random

import pytest

from pagedllm.config import CacheConfig, SchedulerConfig
from pagedllm.core.request import Request, RequestStatus
from pagedllm.core.scheduler import Scheduler
from pagedllm.outputs import EngineCoreOutput

from tests.helpers.core_fakes import FakeRunner, make_request

BS = 4
EOS = 0
MAX_MODEL_LEN = 48
BUDGET = 20
MAX_NUM_SEQS = 6


def _random_request(rng: random.Random, prefixes: list[list[int]]) -> Request:
    # Shared prefixes make prefix hits (and same-step hits) common.
    prompt = rng.choice(prefixes)[: rng.randint(0, 16)] + [rng.randint(1, 9) for _ in range(rng.randint(1, 10))]
    max_tokens = rng.randint(1, 24)
    kwargs: dict[str, object] = {}
    if rng.random() < 0.3:
        kwargs["ignore_eos"] = True
    if rng.random() < 0.2:
        kwargs["stop_token_ids"] = [rng.randint(1, 9)]
    if rng.random() < 0.2:
        kwargs["min_tokens"] = rng.randint(0, max_tokens)
    if rng.random() < 0.1:
        kwargs["prompt_logprobs"] = 1
    return make_request(prompt, max_tokens=max_tokens, eos_token_id=EOS, **kwargs)


def _abort_random(rng: random.Random, sched: Scheduler, aborted: set[str]) -> None:
    if sched.requests and rng.random() < 0.08:
        req_id = rng.choice(sorted(sched.requests))
        sched.finish_requests(req_id, RequestStatus.FINISHED_ABORTED)
        aborted.add(req_id)


def _check_step_limits(sched: Scheduler, num_scheduled: dict[str, int]) -> None:
    assert sum(num_scheduled.values()) <= BUDGET
    assert len(num_scheduled) <= MAX_NUM_SEQS and sched.num_running <= MAX_NUM_SEQS
    for request in sched.running:
        # placeholders: tokens of steps in flight (asynchronous scheduling), at most one per step
        assert request.num_output_placeholders <= 2
        assert request.num_computed_tokens <= min(request.num_tokens + request.num_output_placeholders, MAX_MODEL_LEN)


def _collect(outs: list[EngineCoreOutput], tokens: dict[str, list[int]], finished: dict[str, str],
             prompt_positions: dict[str, list[int]]) -> None:
    for out in outs:
        assert out.request_id not in finished, "output after the finish"
        tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
        if out.new_prompt_logprobs is not None:
            positions = prompt_positions.setdefault(out.request_id, [])
            positions.extend(row[0] for row in out.new_prompt_logprobs.token_ids)
        if out.finish_reason is not None:
            finished[out.request_id] = out.finish_reason


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("caching", [True, False])
@pytest.mark.parametrize("async_scheduling", [False, True])
def test_random_workload_runs_to_completion(seed: int, caching: bool, async_scheduling: bool) -> None:
    rng = random.Random(seed)
    sched = Scheduler(SchedulerConfig(MAX_NUM_SEQS, BUDGET, MAX_MODEL_LEN, async_scheduling=async_scheduling),
                      CacheConfig(block_size=BS, enable_prefix_caching=caching), num_blocks=16)
    runner = FakeRunner(BS, sample_fn=lambda req_id, tokens: rng.randint(0, 9))
    prefixes = [[rng.randint(1, 9) for _ in range(16)] for _ in range(3)]
    all_requests: list[Request] = []
    tokens: dict[str, list[int]] = {}
    finished: dict[str, str] = {}
    aborted: set[str] = set()
    prompt_positions: dict[str, list[int]] = {}
    # Asynchronous scheduling: step N's output is applied only after step N+1 was scheduled.
    in_flight: list[tuple] = []
    for _ in range(2000):
        if len(all_requests) < 60 and rng.random() < 0.5:
            all_requests.append(_random_request(rng, prefixes))
            sched.add_request(all_requests[-1])
        if not sched.has_unfinished_requests() and len(all_requests) >= 60:
            break
        _abort_random(rng, sched, aborted)  # between steps
        sched_out = sched.schedule()
        _check_step_limits(sched, sched_out.num_scheduled_tokens)
        in_flight.append((sched_out, runner.execute(sched_out)))
        _abort_random(rng, sched, aborted)  # while the step runs
        if len(in_flight) > async_scheduling:
            _collect(sched.update_from_output(*in_flight.pop(0)), tokens, finished, prompt_positions)
        sched.kv_cache_manager.check_invariants()
    for step in in_flight:
        _collect(sched.update_from_output(*step), tokens, finished, prompt_positions)
    assert not sched.has_unfinished_requests(), "did not finish"
    sched.kv_cache_manager.check_all_free()
    _check_results(all_requests, tokens, finished, aborted)
    for request in all_requests:  # each prompt position reported once, in order, even if preempted
        positions = prompt_positions.get(request.request_id, [])
        assert positions == list(range(len(positions)))
        if request.sampling_params.prompt_logprobs is not None and request.request_id in finished:
            assert len(positions) == request.num_prompt_tokens
    assert sched.num_preemptions > 0, "the pool should be tight enough to preempt"
    if caching:
        assert sched.kv_cache_manager.prefix_cache_hits > 0


def _check_results(requests: list[Request], tokens: dict[str, list[int]],
                   finished: dict[str, str], aborted: set[str]) -> None:
    assert aborted and finished
    for request in requests:
        req_id = request.request_id
        assert request.is_finished()
        # What the engine saw is exactly what the request holds.
        assert tokens.get(req_id, []) == request.output_token_ids
        if req_id in aborted:
            assert request.get_finish_reason() == "abort" and req_id not in finished
            continue
        assert finished[req_id] == request.get_finish_reason()
        assert request.num_output_tokens <= request.max_tokens
        assert request.num_tokens <= MAX_MODEL_LEN
        if finished[req_id] == "length":
            assert (request.num_output_tokens == request.max_tokens
                    or request.num_tokens == MAX_MODEL_LEN)
