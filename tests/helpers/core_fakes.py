"""Fake requests and a fake model runner for the core/ tests (no model, no torch).

FakeRunner follows the runner contract from the SchedulerOutput diffs alone, and simulates the KV
cache: every computed position writes (position, token) into its slot, and every step each
scheduled request checks that its whole prefix reads back right. A shared or reused block holding
the wrong content therefore fails a test, not just a miscount.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from pagedllm.core.request import Request
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.outputs import LogprobsLists, ModelRunnerOutput
from pagedllm.sampling_params import SamplingParams

_ids = itertools.count()


def make_request(
    prompt: list[int],
    max_tokens: int = 16,
    req_id: str | None = None,
    eos_token_id: int | None = None,
    **sampling_kwargs: object,
) -> Request:
    """A Request as the engine would hand it to the scheduler."""
    params = SamplingParams(max_tokens=max_tokens, **sampling_kwargs)  # type: ignore[arg-type]
    return Request(
        request_id=req_id if req_id is not None else f"req-{next(_ids)}",
        prompt_token_ids=list(prompt),
        sampling_params=params,
        eos_token_id=eos_token_id,
        max_tokens=max_tokens,
    )


@dataclass
class _RunnerRequest:
    token_ids: list[int]
    block_ids: list[int]
    num_computed_tokens: int
    num_prompt_tokens: int
    wants_prompt_logprobs: bool


SampleFn = Callable[[str, list[int]], int]


@dataclass
class FakeRunner:
    block_size: int
    sample_fn: SampleFn = field(default=lambda req_id, tokens: 7)
    kv: dict[int, tuple[int, int]] = field(default_factory=dict)  # slot -> (position, token)
    reqs: dict[str, _RunnerRequest] = field(default_factory=dict)

    def execute(self, sched_out: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(sched_out)
        order = list(sched_out.num_scheduled_tokens.items())
        # Write every scheduled token's KV before any read, as paged attention does per layer.
        for req_id, n in order:
            state = self.reqs[req_id]
            start = state.num_computed_tokens
            assert start + n <= len(state.token_ids), "scheduled past the known tokens"
            assert len(state.block_ids) * self.block_size >= start + n, "block table too short"
            for pos in range(start, start + n):
                self.kv[self._slot(state, pos)] = (pos, state.token_ids[pos])
        sampled: list[list[int]] = []
        prompt_logprobs: dict[str, LogprobsLists] = {}
        for req_id, n in order:
            state = self.reqs[req_id]
            end = state.num_computed_tokens + n
            for pos in range(end):  # the attention read: the whole prefix must be intact
                assert self.kv.get(self._slot(state, pos)) == (pos, state.token_ids[pos]), (
                    f"{req_id}: wrong KV at position {pos}")
            if state.wants_prompt_logprobs and state.num_computed_tokens < state.num_prompt_tokens:
                # One row per prompt position computed this step; column 0 holds the position.
                prompt_logprobs[req_id] = _fake_logprobs(
                    state.num_computed_tokens, min(end, state.num_prompt_tokens))
            state.num_computed_tokens = end
            if end == len(state.token_ids):
                token = self.sample_fn(req_id, state.token_ids)
                state.token_ids.append(token)
                sampled.append([token])
            else:
                sampled.append([])
        return ModelRunnerOutput([req_id for req_id, _ in order], sampled, prompt_logprobs=prompt_logprobs)

    def _update_states(self, sched_out: SchedulerOutput) -> None:
        for req_id in sched_out.finished_req_ids | sched_out.preempted_req_ids:
            self.reqs.pop(req_id, None)
        for new in sched_out.scheduled_new_reqs:
            assert new.req_id not in self.reqs, f"{new.req_id} sent as new twice"
            self.reqs[new.req_id] = _RunnerRequest(
                new.prompt_token_ids + new.output_token_ids, list(new.block_ids),
                new.num_computed_tokens, len(new.prompt_token_ids),
                new.sampling_params.prompt_logprobs is not None)
        cached = sched_out.scheduled_cached_reqs
        for req_id, new_block_ids, num_computed in zip(
                cached.req_ids, cached.new_block_ids, cached.num_computed_tokens):
            state = self.reqs[req_id]
            assert state.num_computed_tokens == num_computed, f"{req_id}: num_computed_tokens drift"
            state.block_ids.extend(new_block_ids)

    def _slot(self, state: _RunnerRequest, pos: int) -> int:
        return state.block_ids[pos // self.block_size] * self.block_size + pos % self.block_size


def _fake_logprobs(start: int, end: int) -> LogprobsLists:
    n = end - start
    return LogprobsLists([[pos] for pos in range(start, end)], [[0.0]] * n, [1] * n)
