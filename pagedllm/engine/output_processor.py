"""Turns engine-core outputs into user-facing RequestOutputs: detokenize, stop strings, logprobs, n > 1."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pagedllm.engine.detokenizer import IncrementalDetokenizer, decode_token
from pagedllm.metrics.iteration_stats import IterationStats
from pagedllm.outputs import (
    CompletionOutput,
    EngineCoreOutput,
    Logprob,
    LogprobsLists,
    PromptLogprobs,
    RequestMetrics,
    RequestOutput,
    SampleLogprobs,
)
from pagedllm.sampling_params import RequestOutputKind, SamplingParams


@dataclass
class SequenceState:
    """One of a request's n output sequences."""

    index: int
    params: SamplingParams
    detokenizer: IncrementalDetokenizer | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: SampleLogprobs | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    sent_tokens: int = 0  # for DELTA outputs


@dataclass
class RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    output_kind: RequestOutputKind
    sequences: list[SequenceState]
    prompt_logprobs: PromptLogprobs | None
    metrics: RequestMetrics
    child_ids: list[str] = field(default_factory=list)
    num_cached_tokens: int = 0

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.sequences)


class OutputProcessor:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.requests: dict[str, RequestState] = {}
        self._child_to_parent: dict[str, tuple[RequestState, SequenceState]] = {}
        # Set by the server to collect latency metrics; None offline, where nobody reads them.
        self.iteration_stats: IterationStats | None = None

    def add_request(self, request_id: str, prompt: str | None, prompt_token_ids: list[int],
                    child_ids: list[str], params: SamplingParams, arrival_time: float) -> None:
        sequences = [self._new_sequence(i, params) for i in range(len(child_ids))]
        state = RequestState(
            request_id, prompt, prompt_token_ids, params.output_kind, sequences,
            prompt_logprobs=[None] if params.prompt_logprobs is not None else None,
            metrics=RequestMetrics(arrival_time=arrival_time), child_ids=list(child_ids),
        )
        self.requests[request_id] = state
        for child_id, seq in zip(child_ids, sequences):
            self._child_to_parent[child_id] = (state, seq)

    def _new_sequence(self, index: int, params: SamplingParams) -> SequenceState:
        detok = None
        if params.detokenize:
            detok = IncrementalDetokenizer(
                self.tokenizer, [], params.skip_special_tokens, params.spaces_between_special_tokens,
                list(params.stop or []), params.include_stop_str_in_output,
            )
        logprobs: SampleLogprobs | None = [] if params.logprobs is not None else None
        return SequenceState(index, params, detok, logprobs=logprobs,
                             cumulative_logprob=0.0 if logprobs is not None else None)

    def process_outputs(self, outputs: list[EngineCoreOutput]) -> tuple[list[RequestOutput], list[str]]:
        """Returns the RequestOutputs to give the user and the child ids stopped by a stop string
        (the caller must finish those in the scheduler)."""
        now = time.monotonic()
        touched: dict[str, RequestState] = {}
        stopped: list[str] = []
        for out in outputs:
            entry = self._child_to_parent.get(out.request_id)
            if entry is None:
                continue
            state, seq = entry
            if self._apply(state, seq, out, now):
                stopped.append(out.request_id)
            if seq.finish_reason is not None:
                del self._child_to_parent[out.request_id]
            touched[state.request_id] = state
        results = []
        for state in touched.values():
            result = self._make_output(state)
            if result is not None:
                results.append(result)
            if state.finished:
                state.metrics.finished_time = now
                self.requests.pop(state.request_id, None)
                if self.iteration_stats is not None:
                    self._record_finished(state, now)
        return results, stopped

    def _record_finished(self, state: RequestState, now: float) -> None:
        assert self.iteration_stats is not None
        reason = state.sequences[0].finish_reason or "abort"  # unfinished here means aborted
        num_generated = sum(len(seq.token_ids) for seq in state.sequences)
        self.iteration_stats.on_finished(state.metrics, reason, len(state.prompt_token_ids), num_generated, now)

    def _apply(self, state: RequestState, seq: SequenceState, out: EngineCoreOutput, now: float) -> bool:
        """Fold one core output into a sequence; True if a stop string ended it."""
        if out.new_prompt_logprobs is not None and state.prompt_logprobs is not None:
            self._add_prompt_logprobs(state, out.new_prompt_logprobs)
        state.num_cached_tokens = max(state.num_cached_tokens, out.num_cached_tokens)
        if state.metrics.first_scheduled_time is None:
            state.metrics.first_scheduled_time = out.first_scheduled_time
        if out.new_token_ids:
            if self.iteration_stats is not None:
                self.iteration_stats.on_tokens(state.metrics, len(out.new_token_ids),
                                               len(state.prompt_token_ids), now)
            if state.metrics.first_token_time is None:
                state.metrics.first_token_time = now
            state.metrics.last_token_time = now
            new_token_ids, stop_str = out.new_token_ids, None
            if seq.detokenizer is not None:
                stop_str = seq.detokenizer.update(new_token_ids)
                # Several tokens at once (speculative decoding): those after a stop string go.
                new_token_ids = new_token_ids[: len(seq.detokenizer.token_ids) - len(seq.token_ids)]
            seq.token_ids.extend(new_token_ids)
            if out.new_logprobs is not None and seq.logprobs is not None:
                self._add_sample_logprobs(seq, out.new_logprobs, len(new_token_ids))
            if stop_str is not None:  # it came first, even if the core also finished the request
                seq.finish_reason, seq.stop_reason = "stop", stop_str
                return out.finish_reason is None  # the core must still be told
        if out.finish_reason is not None:
            seq.finish_reason, seq.stop_reason = out.finish_reason, out.stop_reason
        return False

    def _add_sample_logprobs(self, seq: SequenceState, lists: LogprobsLists, num_tokens: int) -> None:
        assert seq.logprobs is not None
        for ids, lps, rank in zip(lists.token_ids[:num_tokens], lists.logprobs, lists.ranks):
            seq.logprobs.append(self._to_dict(ids, lps, rank))
            seq.cumulative_logprob = (seq.cumulative_logprob or 0.0) + lps[0]

    def _add_prompt_logprobs(self, state: RequestState, lists: LogprobsLists) -> None:
        assert state.prompt_logprobs is not None
        # After preemption the prompt is recomputed; keep only positions we have not seen yet.
        need = len(state.prompt_token_ids) - len(state.prompt_logprobs)
        for ids, lps, rank in list(zip(lists.token_ids, lists.logprobs, lists.ranks))[:max(need, 0)]:
            state.prompt_logprobs.append(self._to_dict(ids, lps, rank))

    def _to_dict(self, ids: list[int], lps: list[float], rank: int) -> dict[int, Logprob]:
        entry = {ids[0]: Logprob(lps[0], rank, decode_token(self.tokenizer, ids[0]))}
        for r, (t, lp) in enumerate(zip(ids[1:], lps[1:]), start=1):
            if t not in entry:
                entry[t] = Logprob(lp, r, decode_token(self.tokenizer, t))
        return entry

    def _make_output(self, state: RequestState) -> RequestOutput | None:
        finished = state.finished
        kind = state.output_kind
        if kind == RequestOutputKind.FINAL_ONLY and not finished:
            return None
        delta = kind == RequestOutputKind.DELTA
        completions = [self._completion(seq, delta) for seq in state.sequences]
        return RequestOutput(
            request_id=state.request_id,
            prompt=state.prompt,
            prompt_token_ids=state.prompt_token_ids,
            prompt_logprobs=state.prompt_logprobs,
            outputs=completions,
            finished=finished,
            metrics=state.metrics,
            num_cached_tokens=state.num_cached_tokens,
        )

    def _completion(self, seq: SequenceState, delta: bool) -> CompletionOutput:
        finished = seq.finish_reason is not None
        text = seq.detokenizer.get_next_output_text(finished, delta) if seq.detokenizer else ""
        start = seq.sent_tokens if delta else 0
        seq.sent_tokens = len(seq.token_ids)
        return CompletionOutput(
            index=seq.index,
            text=text,
            token_ids=seq.token_ids[start:],
            cumulative_logprob=seq.cumulative_logprob,
            logprobs=(seq.logprobs[start:] if seq.logprobs is not None else None),
            finish_reason=seq.finish_reason,
            stop_reason=seq.stop_reason,
        )

    def abort(self, request_id: str) -> list[str]:
        """Forget a request; returns its child ids still known (to abort in the scheduler)."""
        state = self.requests.pop(request_id, None)
        if state is None:
            return []
        if self.iteration_stats is not None:
            self._record_finished(state, time.monotonic())
        children = [c for c in state.child_ids if c in self._child_to_parent]
        for c in children:
            del self._child_to_parent[c]
        return children

    def parent_of(self, child_id: str) -> str | None:
        """The user request id a sequence (child) id belongs to, while it is unfinished."""
        entry = self._child_to_parent.get(child_id)
        return entry[0].request_id if entry is not None else None

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)
