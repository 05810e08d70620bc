"""Data passed out of the model runner, out of the engine core and to the user (lists only, no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class LogprobsLists:
    """Top logprobs for a run of positions of one request.

    Row i is one position: column 0 is the token that was sampled (or, for prompt logprobs, the next
    prompt token), columns 1.. are the top-k tokens by logprob.
    """

    token_ids: list[list[int]]  # [num_positions][1 + k]
    logprobs: list[list[float]]  # [num_positions][1 + k]
    ranks: list[int]  # [num_positions] rank of column 0's token among all tokens (1 = most likely)

    def __len__(self) -> int:
        return len(self.ranks)

    def extend(self, other: LogprobsLists) -> None:
        self.token_ids.extend(other.token_ids)
        self.logprobs.extend(other.logprobs)
        self.ranks.extend(other.ranks)


@dataclass(slots=True)
class ModelRunnerOutput:
    """One step's result from the worker, per scheduled request."""

    req_ids: list[str]
    # [num_reqs] sampled tokens; empty for a request in the middle of its prefill
    sampled_token_ids: list[list[int]]
    # req_id -> logprobs of the tokens sampled this step (only requests that asked)
    logprobs: dict[str, LogprobsLists] = field(default_factory=dict)
    # req_id -> prompt logprobs of the prompt positions computed this step (only requests that asked)
    prompt_logprobs: dict[str, LogprobsLists] = field(default_factory=dict)
    # req_id -> draft tokens proposed for the request's next step (speculative decoding)
    spec_token_ids: dict[str, list[int]] = field(default_factory=dict)


class ModelRunnerOutputFuture(Protocol):
    """A launched step whose output is read later (asynchronous scheduling)."""

    def result(self) -> ModelRunnerOutput:
        """Wait for the step and return its output (idempotent)."""
        ...


@dataclass(slots=True)
class EngineCoreOutput:
    """What the engine core reports for one request after a step."""

    request_id: str
    new_token_ids: list[int]
    new_logprobs: LogprobsLists | None = None
    new_prompt_logprobs: LogprobsLists | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: int | str | None = None  # the stop token id (or, set later, the stop string)
    num_cached_tokens: int = 0
    first_scheduled_time: float | None = None  # time.monotonic() when the request first ran (queue time)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class SpecDecodingStats:
    """Speculative decoding's totals so far (vLLM's spec_decode_* counters).

    A draft is one request's proposal checked in one step; its tokens are accepted from the
    first on, up to the first the target disagrees with."""

    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    # [k] drafts whose token at position i (0-based) was accepted
    num_accepted_tokens_per_pos: list[int] = field(default_factory=list)

    def observe(self, num_draft_tokens: int, num_accepted: int) -> None:
        self.num_drafts += 1
        self.num_draft_tokens += num_draft_tokens
        self.num_accepted_tokens += num_accepted
        per_pos = self.num_accepted_tokens_per_pos
        if len(per_pos) < num_draft_tokens:
            per_pos.extend([0] * (num_draft_tokens - len(per_pos)))
        for i in range(num_accepted):
            per_pos[i] += 1

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens over proposed ones."""
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens a draft's step produced on average: the accepted ones plus the target's own."""
        return 1.0 + self.num_accepted_tokens / self.num_drafts if self.num_drafts else 0.0

    def per_position_acceptance(self) -> list[float]:
        """[k] the fraction of drafts whose token at each position was accepted."""
        return [n / self.num_drafts for n in self.num_accepted_tokens_per_pos] if self.num_drafts else []

    def since(self, earlier: SpecDecodingStats) -> SpecDecodingStats:
        """What happened between `earlier` and these totals."""
        before = earlier.num_accepted_tokens_per_pos
        return SpecDecodingStats(
            self.num_drafts - earlier.num_drafts, self.num_draft_tokens - earlier.num_draft_tokens,
            self.num_accepted_tokens - earlier.num_accepted_tokens,
            [n - (before[i] if i < len(before) else 0) for i, n in enumerate(self.num_accepted_tokens_per_pos)])

    def copy(self) -> SpecDecodingStats:
        return SpecDecodingStats(self.num_drafts, self.num_draft_tokens, self.num_accepted_tokens,
                                 list(self.num_accepted_tokens_per_pos))


@dataclass(slots=True)
class SchedulerStats:
    """The engine core's state after a step, for metrics and logs (counters are totals so far)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0  # fraction of blocks in use by running requests
    num_blocks: int = 0
    num_free_blocks: int = 0  # free or cached-and-unreferenced
    prefix_cache_queries: int = 0  # tokens looked up
    prefix_cache_hits: int = 0  # tokens found
    num_preemptions: int = 0
    # Sequences handed to the core so far, refused ones too: the server counts those still in transit.
    num_requests_received: int = 0
    spec_decoding: SpecDecodingStats | None = None  # None without speculative decoding


@dataclass(slots=True)
class EngineCoreOutputs:
    """One step's outputs from the engine core, with its stats (what crosses the process boundary)."""

    outputs: list[EngineCoreOutput]
    stats: SchedulerStats | None = None
    # request_id -> why the core refused it at admission (e.g. the prompt can never fit the cache)
    errors: dict[str, str] | None = None


@dataclass(slots=True)
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


# One dict per position: token id -> Logprob (vLLM's shape).
SampleLogprobs = list[dict[int, Logprob]]
PromptLogprobs = list[dict[int, Logprob] | None]


@dataclass
class RequestMetrics:
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: SampleLogprobs | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: PromptLogprobs | None
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics | None = None
    num_cached_tokens: int = 0
