"""Continuous-batching scheduler: which requests compute how many tokens each step (no torch).

There are no prefill and decode phases. Each request has `num_computed_tokens` (tokens whose KV
is in the cache) and `num_tokens` (prompt + outputs); every step the scheduler gives requests
tokens so that the first catches up with the second:

    prompt + outputs  |==== computed ====|---- scheduled this step ----|.. later ..|
                      0                  num_computed_tokens                      num_tokens

A whole prompt, a chunk of it, one decode token, or a recompute after preemption are all the same
arithmetic. A request whose scheduled tokens reach `num_tokens` gets a sampled token back.

With asynchronous scheduling, step N+1 is scheduled before step N's tokens come back. A request
scheduled to its end gets a placeholder for the token it will sample, counted in its length, so
step N+1 can compute that token (the runner reads it on the device). The placeholder is replaced
when the token arrives in update_from_output. A request that stops at step N has wasted its
slot of step N+1, whose output is dropped; preemption drops placeholders (the token is sampled
again after the recompute).

Speculative decoding adds a request's draft tokens after its known ones; they are scheduled
tokens like any other (they count in the budget and get KV slots):

    prompt + outputs  |==== computed ====| last |  d1  d2  d3  |
                                  num_computed  num_tokens     num_tokens + drafts
    accepted d1 d2, then the target's own t:  |==== computed ========| t |   (d3's slot is reused)

The runner returns the accepted drafts and the target's next token; the computed count then goes
back by the rejected drafts, so their KV slots are overwritten by later steps. Block hashes (the
prefix cache) only ever cover all_token_ids, which drafts enter only once accepted.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from pagedllm.config import CacheConfig, SchedulerConfig
from pagedllm.core.block_hash import update_block_hashes
from pagedllm.core.grammar_hooks import GrammarHooks, GrammarState
from pagedllm.core.kv_cache_manager import KVCacheManager
from pagedllm.core.preemption import preempt
from pagedllm.core.request import Request, RequestStatus
from pagedllm.core.scheduler_output import CachedRequestData, NewRequestData, SchedulerOutput
from pagedllm.core.stop import check_stop
from pagedllm.outputs import EngineCoreOutput, LogprobsLists, ModelRunnerOutput, SpecDecodingStats
from pagedllm.spec_decode.config import SpeculativeConfig

_RUNNING = RequestStatus.RUNNING


class Scheduler:
    """Owns the waiting queue, the running list and the KV cache manager.

    Invariant: `running` is in admission order. Waiting is FCFS (a preempted request goes back to
    its front), except that a constrained request whose grammar is still compiling keeps its place
    while the ones behind it are admitted; victims are taken from the end of `running`, so the
    order survives preemption and resumption; hence `running[-1]` is the latest admitted.
    """

    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig, num_blocks: int,
                 speculative_config: SpeculativeConfig | None = None, grammars: GrammarHooks | None = None) -> None:
        """`grammars`: structured outputs' grammar state of constrained requests (the engine core's
        manager); a constrained request is admitted once its grammar is compiled."""
        self.scheduler_config = scheduler_config
        self.cache_config = cache_config
        self.max_num_seqs = scheduler_config.max_num_seqs
        self.max_num_batched_tokens = scheduler_config.max_num_batched_tokens
        self.max_model_len = scheduler_config.max_model_len
        self.block_size = cache_config.block_size
        self.enable_prefix_caching = cache_config.enable_prefix_caching
        self.async_scheduling = scheduler_config.async_scheduling
        self.kv_cache_manager = KVCacheManager(num_blocks, self.block_size, self.enable_prefix_caching,
                                               cache_config.prefix_caching_hash_algo)
        self._hasher = self.kv_cache_manager.hasher
        self.requests: dict[str, Request] = {}  # unfinished requests by id
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        # Requests the runner holds state for that finished since the last schedule().
        self.finished_req_ids: set[str] = set()
        # Outputs decided in schedule() (requests that outgrew the KV pool), sent by the next
        # update_from_output().
        self._pending_outputs: list[EngineCoreOutput] = []
        # req_id -> why it failed before it ran (its grammar did not compile), for the client
        self._errors: dict[str, str] = {}
        # req_id -> prompt positions whose prompt logprobs were already sent. A request preempted
        # during or after its prefill recomputes its prompt; those rows must not be sent twice.
        self._num_prompt_logprobs_sent: dict[str, int] = {}
        self._num_preemptions = 0
        self.speculative_config = speculative_config
        self.spec_decoding_stats = SpecDecodingStats() if speculative_config is not None else None
        # KV slots past a request's scheduled tokens that a draft model writes before the next step
        self.num_lookahead_tokens = speculative_config.num_lookahead_tokens if speculative_config else 0
        self.grammars = grammars

    # ---- queries --------------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_preemptions(self) -> int:
        """Preemptions since the scheduler was created."""
        return self._num_preemptions

    def get_request(self, req_id: str) -> Request | None:
        """The unfinished request with this id, or None."""
        return self.requests.get(req_id)

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def get_num_unfinished_requests(self) -> int:
        return len(self.waiting) + len(self.running)

    # ---- requests in and out --------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        """Queue a new request (FCFS). Raises ValueError if it can never fit."""
        if request.request_id in self.requests:
            raise ValueError(f"Request id {request.request_id!r} is already in use.")
        if request.num_tokens > self.max_model_len:
            raise ValueError(f"The prompt ({request.num_tokens} tokens) is longer than "
                             f"max_model_len ({self.max_model_len}).")
        # A prompt larger than the whole pool could never be admitted and would block the queue.
        # (A request that outgrows the pool while decoding is finished as "length" instead.)
        num_prompt_blocks = -(-request.num_tokens // self.block_size)
        if num_prompt_blocks > self.kv_cache_manager.block_pool.num_blocks:
            raise ValueError(f"The prompt needs {num_prompt_blocks} KV blocks but the cache has only "
                             f"{self.kv_cache_manager.block_pool.num_blocks}.")
        if self.enable_prefix_caching:
            update_block_hashes(request, self.block_size, hasher=self._hasher)
        request.status = RequestStatus.WAITING
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def finish_requests(self, request_ids: str | Iterable[str], finished_status: RequestStatus) -> None:
        """Finish requests from outside (aborts, stop strings) and free their blocks at once.

        Unknown or already finished ids are ignored: an abort can race with a natural finish.
        """
        if not RequestStatus.is_finished(finished_status):
            raise ValueError(f"{finished_status!r} is not a finished status.")
        ids = (request_ids,) if isinstance(request_ids, str) else request_ids
        any_running = any_waiting = False
        for req_id in ids:
            request = self.requests.get(req_id)
            if request is None:
                continue
            was_running = request.status == _RUNNING
            any_running |= was_running
            any_waiting |= not was_running
            request.status = finished_status
            self._free_request(request, was_running)
        # Rebuild each queue once rather than list.remove per id (O(n) each).
        if any_running:
            self.running = [r for r in self.running if r.status == _RUNNING]
        if any_waiting:
            self.waiting = deque(r for r in self.waiting if not r.is_finished())

    def _free_request(self, request: Request, known_to_runner: bool) -> None:
        # Only requests that were RUNNING are reported in finished_req_ids: waiting and
        # preempted requests hold no runner state.
        if known_to_runner:
            self.finished_req_ids.add(request.request_id)
        self.kv_cache_manager.free(request)
        if request.structured is not None:
            assert self.grammars is not None
            self.grammars.release(request)
        del self.requests[request.request_id]
        self._num_prompt_logprobs_sent.pop(request.request_id, None)

    # ---- one step -------------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Choose this step's tokens: running requests first, in order, then waiting ones (FCFS).

        Each request gets min(num_tokens - num_computed_tokens, token budget left) tokens, capped
        so num_computed_tokens + n <= max_model_len. A running request that cannot get blocks
        preempts the latest-arrived running request until it fits (or it was itself the victim,
        which ends the step). Waiting requests are admitted only if nobody was preempted this step.

        By the time this returns, every scheduled request's `num_computed_tokens` has been
        advanced by its scheduled tokens (we do it as each is scheduled, one pass); the
        `num_computed_tokens` in NewRequestData / CachedRequestData is the value BEFORE this
        step, i.e. the position of the first token scheduled this step.
        """
        budget = self.max_num_batched_tokens
        num_scheduled_tokens: dict[str, int] = {}
        cached_reqs = CachedRequestData()
        preempted_req_ids: set[str] = set()
        spec_tokens: dict[str, list[int]] = {}
        budget = self._schedule_running(budget, num_scheduled_tokens, cached_reqs, preempted_req_ids, spec_tokens)
        new_reqs: list[NewRequestData] = []
        if not preempted_req_ids:
            budget = self._schedule_waiting(budget, num_scheduled_tokens, new_reqs)
        output = SchedulerOutput(
            scheduled_new_reqs=new_reqs,
            scheduled_cached_reqs=cached_reqs,
            num_scheduled_tokens=num_scheduled_tokens,
            total_num_scheduled_tokens=self.max_num_batched_tokens - budget,
            finished_req_ids=self.finished_req_ids,
            preempted_req_ids=preempted_req_ids,
            scheduled_spec_decode_tokens=spec_tokens,
        )
        self.finished_req_ids = set()
        return output

    def _schedule_running(
        self,
        budget: int,
        num_scheduled_tokens: dict[str, int],
        cached_reqs: CachedRequestData,
        preempted_req_ids: set[str],
        spec_tokens: dict[str, list[int]],
    ) -> int:
        """Schedule running requests in order; returns the token budget left. The drafts scheduled
        go to `spec_tokens`."""
        running = self.running
        allocate_slots = self.kv_cache_manager.allocate_slots
        max_model_len = self.max_model_len
        spec_config = self.speculative_config
        speculate = spec_config is not None and spec_config.speculates(len(running))
        # Always, even in a step without drafts: the runner decides by its own count whether to
        # propose after this step, and a draft model must never write outside a request's blocks.
        lookahead = self.num_lookahead_tokens
        i = 0
        while i < len(running) and budget > 0:
            request = running[i]
            num_computed = request.num_computed_tokens
            num_tokens = len(request.all_token_ids)
            placeholders = request.num_output_placeholders
            if placeholders and len(request.output_token_ids) + placeholders >= request.max_tokens:
                i += 1  # its last token is in flight
                continue
            drafts = request.spec_token_ids
            if drafts:
                request.spec_token_ids = []
                # No use checking drafts past max_tokens: the run would be cut there; nor, for a
                # constrained request, past the first its grammar refuses.
                drafts = drafts[:request.max_tokens - len(request.output_token_ids) - 1] if speculate else []
                if drafts and request.structured is not None:
                    assert self.grammars is not None
                    drafts = self.grammars.valid_prefix(request, drafts)
            n = min(num_tokens + placeholders + len(drafts) - num_computed, budget, max_model_len - num_computed)
            if n <= 0:  # nothing new to compute (no sampled token came back for it)
                i += 1
                continue
            ahead = min(lookahead, max_model_len - num_computed - n)
            new_block_ids = allocate_slots(request, n, num_lookahead_tokens=ahead)
            while new_block_ids is None:
                # Victims come from the end, at index >= i: never a request already scheduled
                # this step, so nothing needs to be taken back out of this step's output.
                victim = running.pop()
                if victim is request and i == 0:
                    # Alone and still out of blocks: the whole pool cannot hold it, ever.
                    self._finish_out_of_kv(request)
                    return budget
                self._preempt(victim)
                preempted_req_ids.add(victim.request_id)
                if victim is request:
                    return budget
                new_block_ids = allocate_slots(request, n, num_lookahead_tokens=ahead)
            req_id = request.request_id
            num_scheduled_tokens[req_id] = n
            if drafts and num_computed + n > num_tokens:  # the budget or max_model_len may cut them
                spec_tokens[req_id] = drafts[:num_computed + n - num_tokens]
            cached_reqs.req_ids.append(req_id)
            cached_reqs.new_block_ids.append(new_block_ids)
            cached_reqs.num_computed_tokens.append(num_computed)
            request.num_computed_tokens = num_computed + n
            if self.async_scheduling and num_computed + n == num_tokens + placeholders:
                request.num_output_placeholders = placeholders + 1
            budget -= n
            i += 1
        return budget

    def _preempt(self, request: Request) -> None:
        preempt(request, self.kv_cache_manager)
        self.waiting.appendleft(request)  # resumes before anything that arrived after it
        self._num_preemptions += 1

    def _finish_out_of_kv(self, request: Request) -> None:
        # Preempting it would loop forever (it could never be readmitted), so end it the way a
        # max_model_len cap would. Its output reaches the engine in the next update_from_output.
        request.status = RequestStatus.FINISHED_LENGTH_CAPPED
        self._free_request(request, known_to_runner=True)
        self._pending_outputs.append(EngineCoreOutput(
            request.request_id, [], finish_reason=request.get_finish_reason(),
            num_cached_tokens=request.num_cached_tokens))

    def _schedule_waiting(
        self, budget: int, num_scheduled_tokens: dict[str, int], new_reqs: list[NewRequestData]
    ) -> int:
        """Admit waiting requests (FCFS) while tokens, seats and blocks last; returns budget left."""
        kv_cache_manager = self.kv_cache_manager
        waiting, running = self.waiting, self.running
        compiling: list[Request] = []  # constrained requests whose grammar is not ready: they keep their place
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            request = waiting[0]
            if request.structured is not None and not self._grammar_ready(request):
                waiting.popleft()
                if not request.is_finished():
                    compiling.append(request)
                continue
            hit_blocks, num_hit_tokens = kv_cache_manager.get_computed_blocks(request)
            n = min(request.num_tokens - num_hit_tokens, budget, self.max_model_len - num_hit_tokens)
            ahead = min(self.num_lookahead_tokens, self.max_model_len - num_hit_tokens - n)
            if kv_cache_manager.allocate_slots(request, n, hit_blocks, num_hit_tokens, ahead) is None:
                break  # out of blocks: stop admitting rather than let later arrivals jump ahead
            waiting.popleft()
            running.append(request)
            self._start_running(request, num_hit_tokens)
            req_id = request.request_id
            new_reqs.append(NewRequestData(
                req_id=req_id,
                prompt_token_ids=request.prompt_token_ids,
                output_token_ids=list(request.output_token_ids),  # non-empty when resumed
                sampling_params=request.sampling_params,
                block_ids=kv_cache_manager.get_block_ids(req_id),
                num_computed_tokens=num_hit_tokens,
            ))
            num_scheduled_tokens[req_id] = n
            request.num_computed_tokens = num_hit_tokens + n
            if self.async_scheduling and request.num_computed_tokens == request.num_tokens:
                request.num_output_placeholders = 1
            budget -= n
        waiting.extendleft(reversed(compiling))
        return budget

    def _grammar_ready(self, request: Request) -> bool:
        """Whether a constrained (waiting) request may start: its grammar compiled. One that failed
        to compile is finished here ("abort"), its output sent by the next update and the reason by
        take_errors()."""
        grammars = self.grammars
        assert grammars is not None
        if not grammars.ready(request):
            return False
        failure = grammars.failure(request)
        if failure is None:
            return True
        self._errors[request.request_id] = f"The structured output constraint could not be compiled: {failure}"
        request.status = RequestStatus.FINISHED_ABORTED
        self._free_request(request, known_to_runner=False)
        self._pending_outputs.append(EngineCoreOutput(request.request_id, [],
                                                      finish_reason=request.get_finish_reason()))
        return False

    def take_errors(self) -> dict[str, str]:
        """Requests failed since the last call, with the reason (engine-core outputs carry them to
        the frontend, which fails those requests with it)."""
        errors, self._errors = self._errors, {}
        return errors

    @staticmethod
    def _start_running(request: Request, num_hit_tokens: int) -> None:
        request.status = RequestStatus.RUNNING
        request.num_computed_tokens = num_hit_tokens
        if request.num_cached_tokens < 0:  # first scheduling only, not a resume
            request.num_cached_tokens = num_hit_tokens
        if request.first_scheduled_time is None:
            request.first_scheduled_time = time.monotonic()

    def update_from_output(
        self, scheduler_output: SchedulerOutput, model_runner_output: ModelRunnerOutput
    ) -> list[EngineCoreOutput]:
        """Append sampled tokens, apply stop rules, free finished requests.

        Returns one EngineCoreOutput per request that got tokens, logprobs or prompt logprobs.
        Outputs for requests that are no longer running (aborted meanwhile) are dropped.
        """
        outputs, self._pending_outputs = self._pending_outputs, []
        requests = self.requests
        logprobs = model_runner_output.logprobs
        prompt_logprobs = model_runner_output.prompt_logprobs
        any_finished = False
        scheduled_drafts = scheduler_output.scheduled_spec_decode_tokens
        for req_id, sampled in zip(model_runner_output.req_ids, model_runner_output.sampled_token_ids):
            request = requests.get(req_id)
            if request is None or request.status != _RUNNING:
                continue
            if scheduled_drafts and req_id in scheduled_drafts:
                self._take_back_rejected(request, len(scheduled_drafts[req_id]), len(sampled))
            new_logprobs = logprobs.get(req_id) if logprobs else None
            new_prompt_logprobs = prompt_logprobs.get(req_id) if prompt_logprobs else None
            if new_prompt_logprobs is not None:
                new_prompt_logprobs = self._drop_resent_prompt_logprobs(
                    request, _first_scheduled_position(scheduler_output, req_id), new_prompt_logprobs)
            if sampled:
                if request.num_output_placeholders:
                    request.num_output_placeholders -= len(sampled)
                sampled = self._append_tokens(request, sampled)
                if request.structured is not None and sampled:
                    assert self.grammars is not None
                    state = self.grammars.accept(request, sampled)
                    if state is not GrammarState.GOING and request.status == _RUNNING:
                        request.status = (RequestStatus.FINISHED_STOPPED if state is GrammarState.COMPLETE
                                          else RequestStatus.FINISHED_ABORTED)
            elif new_logprobs is None and new_prompt_logprobs is None:
                continue  # a prefill chunk with nothing to report
            output = EngineCoreOutput(req_id, sampled, new_logprobs, new_prompt_logprobs,
                                      num_cached_tokens=request.num_cached_tokens,
                                      first_scheduled_time=request.first_scheduled_time)
            if request.status != _RUNNING:
                output.finish_reason = request.get_finish_reason()
                output.stop_reason = request.stop_reason
                self._free_request(request, known_to_runner=True)
                any_finished = True
            outputs.append(output)
        if any_finished:  # one rebuild per step instead of a list.remove per finished request
            self.running = [r for r in self.running if r.status == _RUNNING]
        if model_runner_output.spec_token_ids:
            self._set_drafts(model_runner_output.spec_token_ids)
        return outputs

    def _take_back_rejected(self, request: Request, num_drafts: int, num_sampled: int) -> None:
        """The step checked `num_drafts` drafts and produced `num_sampled` tokens (the accepted
        drafts and one of the target's own): the rejected drafts' positions are computed again."""
        num_accepted = num_sampled - 1
        request.num_computed_tokens -= num_drafts - num_accepted
        assert self.spec_decoding_stats is not None
        self.spec_decoding_stats.observe(num_drafts, num_accepted)

    def _set_drafts(self, drafts: dict[str, list[int]]) -> None:
        """Keep the proposals for the requests' next steps (those still running)."""
        requests = self.requests
        for req_id, token_ids in drafts.items():
            request = requests.get(req_id)
            if request is not None and request.status == _RUNNING:
                request.spec_token_ids = token_ids

    def _drop_resent_prompt_logprobs(self, request: Request, start: int, rows: LogprobsLists) -> LogprobsLists | None:
        """Cut the rows of prompt positions already reported before a preemption.
        Row j is prompt position `start + j`."""
        num_sent = self._num_prompt_logprobs_sent.get(request.request_id, 0)
        self._num_prompt_logprobs_sent[request.request_id] = max(num_sent, start + len(rows))
        skip = num_sent - start
        if skip <= 0:
            return rows
        if skip >= len(rows):
            return None
        return LogprobsLists(rows.token_ids[skip:], rows.logprobs[skip:], rows.ranks[skip:])

    def _append_tokens(self, request: Request, token_ids: list[int]) -> list[int]:
        """Append tokens one by one until a stop rule fires; returns those kept."""
        if len(token_ids) == 1:  # the common case, kept lean
            request.append_output_token_ids(token_ids)
            check_stop(request, self.max_model_len)
        else:  # several tokens (speculative decoding): drop those after a stop
            kept = 0
            for token_id in token_ids:
                request.append_output_token_ids([token_id])
                kept += 1
                if check_stop(request, self.max_model_len):
                    break
            token_ids = token_ids[:kept]
        if self.enable_prefix_caching:
            update_block_hashes(request, self.block_size, hasher=self._hasher)
        return token_ids


def _first_scheduled_position(scheduler_output: SchedulerOutput, req_id: str) -> int:
    """The request's num_computed_tokens before the step (its first scheduled position). Read from
    the step's output: with asynchronous scheduling the request may have been scheduled again
    since. A linear search, but only for requests that want prompt logprobs."""
    for new in scheduler_output.scheduled_new_reqs:
        if new.req_id == req_id:
            return new.num_computed_tokens
    cached = scheduler_output.scheduled_cached_reqs
    return cached.num_computed_tokens[cached.req_ids.index(req_id)]
