"""Per-request state owned by the scheduler (no torch).

It lives in core/ rather than engine/ because the scheduler is the one that mutates it every step.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from pagedllm.sampling_params import SamplingParams


class RequestStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    # Everything after this is finished.
    FINISHED_STOPPED = 3
    FINISHED_LENGTH_CAPPED = 4
    FINISHED_ABORTED = 5

    @staticmethod
    def is_finished(status: RequestStatus) -> bool:
        return status >= RequestStatus.FINISHED_STOPPED

    @staticmethod
    def finish_reason(status: RequestStatus) -> str | None:
        return _FINISH_REASON.get(status)


_FINISH_REASON = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH_CAPPED: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
}


@dataclass(slots=True, eq=False)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_id: int | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    max_tokens: int = 16  # resolved by the engine (max_model_len - prompt when the user gave None)
    status: RequestStatus = RequestStatus.WAITING
    output_token_ids: list[int] = field(default_factory=list)
    # prompt + output, kept in one list so slicing for the runner is cheap
    all_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    # Tokens being sampled by steps launched but not yet read back (asynchronous scheduling): the
    # scheduler counts them as if known, so the next step can compute them on the device.
    num_output_placeholders: int = 0
    num_cached_tokens: int = -1  # prefix-cache hit at first scheduling; -1 = not scheduled yet
    num_preemptions: int = 0
    stop_reason: int | str | None = None
    # Block hashes of the full blocks of all_token_ids, extended as tokens arrive (core/block_hash.py).
    block_hashes: list[int | bytes] = field(default_factory=list)  # core/block_hash.py BlockHash
    first_scheduled_time: float | None = None
    # Draft tokens a proposer offered for the positions after all_token_ids (speculative
    # decoding); the next schedule() checks them (or drops them) and empties the list.
    spec_token_ids: list[int] = field(default_factory=list)
    # Structured outputs: the request's grammar state (its compile, its matcher), owned by the
    # engine core's manager (structured_output/manager.py); None when unconstrained.
    structured: Any = None

    def __post_init__(self) -> None:
        if not self.all_token_ids:
            self.all_token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    def append_output_token_ids(self, token_ids: list[int]) -> None:
        self.output_token_ids.extend(token_ids)
        self.all_token_ids.extend(token_ids)

    def is_finished(self) -> bool:
        return RequestStatus.is_finished(self.status)

    def get_finish_reason(self) -> str | None:
        return RequestStatus.finish_reason(self.status)
