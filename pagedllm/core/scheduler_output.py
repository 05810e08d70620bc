"""What the scheduler tells the model runner each step (no torch).

Full request data is sent once (NewRequestData); afterwards only what changed (CachedRequestData).
A request resumed after preemption is sent again as new, with its output tokens so far, because the
runner dropped its state when it was preempted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pagedllm.sampling_params import SamplingParams


@dataclass(slots=True)
class NewRequestData:
    req_id: str
    prompt_token_ids: list[int]
    output_token_ids: list[int]  # non-empty only for a request resumed after preemption
    sampling_params: SamplingParams
    block_ids: list[int]  # the whole block table
    # Tokens already in the KV cache before this step (the prefix-cache hit, 0 on a miss), i.e. the
    # position of the first token scheduled this step. The scheduler's own Request has already
    # been advanced past this step's tokens when schedule() returns.
    num_computed_tokens: int


@dataclass(slots=True)
class CachedRequestData:
    """Requests the runner already knows; parallel to req_ids."""

    req_ids: list[str] = field(default_factory=list)
    new_block_ids: list[list[int]] = field(default_factory=list)  # blocks appended to the table
    # Before this step, as in NewRequestData: the position of the first token scheduled this step.
    num_computed_tokens: list[int] = field(default_factory=list)

    @property
    def num_reqs(self) -> int:
        return len(self.req_ids)


@dataclass(slots=True)
class GrammarOutput:
    """Structured outputs' constraint on the step's sampling: for each listed request, the tokens
    it may sample next (bit t of row i's word t // 32)."""

    req_ids: list[str]
    bitmask: np.ndarray  # [sum(rows_per_request), ceil(vocab / 32)] int32, request after request
    rows_per_request: list[int]  # 1, or k + 1 for a request checking k drafts (one per sampled position)


@dataclass(slots=True)
class SchedulerOutput:
    scheduled_new_reqs: list[NewRequestData]
    scheduled_cached_reqs: CachedRequestData
    # req_id -> tokens to compute this step, in the order the runner should lay them out
    num_scheduled_tokens: dict[str, int]
    total_num_scheduled_tokens: int
    # The runner drops the state of both sets' requests. Only requests the runner was sent (and has
    # not dropped yet) appear: finished = finished or aborted since the previous schedule();
    # preempted = preempted by this schedule() (they come back later as new requests).
    finished_req_ids: set[str]
    preempted_req_ids: set[str] = field(default_factory=set)
    # req_id -> the draft tokens (speculative decoding) among its scheduled tokens: the last
    # len(drafts) of them. The runner checks them against the target's own tokens.
    scheduled_spec_decode_tokens: dict[str, list[int]] = field(default_factory=dict)
    # structured outputs: the allowed next tokens of the constrained requests that sample this step
    grammar: GrammarOutput | None = None

    @property
    def is_empty(self) -> bool:
        return self.total_num_scheduled_tokens == 0
