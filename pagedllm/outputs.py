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
