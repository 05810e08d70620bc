"""The proposer interface (methods are registered in config.py's PROPOSERS).

A proposer guesses each request's next tokens after a step's tokens reach the host; the runner
hands the guesses to the scheduler, which checks them in the request's next step (verifier.py).
One module per method; the runner knows only this interface.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pagedllm.spec_decode.config import PROPOSERS, SpeculativeConfig


@dataclass(slots=True)
class DraftRequest:
    """What a proposer reads of one request."""

    req_id: str
    # [num_tokens] int64, the prompt and the outputs so far: a view of the runner's row, to read
    # during propose() and not keep
    token_ids: np.ndarray
    num_prompt_tokens: int


class Proposer(ABC):
    def __init__(self, config: SpeculativeConfig) -> None:
        self.config = config
        self.num_speculative_tokens = config.num_speculative_tokens

    @abstractmethod
    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        """Draft tokens for each request: at most num_speculative_tokens each, maybe none."""

    def finish_requests(self, req_ids: Iterable[str]) -> None:
        """These requests ended (finished or aborted); a proposer that keeps per-request state drops
        it here (and may keep their outputs to draw from). Preempted requests are not reported:
        they come back with the same tokens."""


def make_proposer(config: SpeculativeConfig) -> Proposer:
    """The proposer of the config's method (the registry is spec_decode/config.py's PROPOSERS)."""
    proposer: Proposer = PROPOSERS.get(config.method)(config)
    return proposer
