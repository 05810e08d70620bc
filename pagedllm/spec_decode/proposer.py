"""The proposer interface, and the registry of speculative-decoding methods.

A proposer guesses each request's next tokens after a step's tokens reach the host; the runner
hands the guesses to the scheduler, which checks them in the request's next step (verifier.py).
One module per method; the runner knows only this interface.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np

from pagedllm.registry import LazyRegistry
from pagedllm.spec_decode.config import SpeculativeConfig


class Proposer(ABC):
    def __init__(self, config: SpeculativeConfig) -> None:
        self.config = config
        self.num_speculative_tokens = config.num_speculative_tokens

    @abstractmethod
    def propose(self, req_ids: list[str], sequences: list[np.ndarray]) -> list[list[int]]:
        """Draft tokens for each request: at most num_speculative_tokens each, maybe none.

        sequences[i]: request i's prompt and outputs so far, int64 [num_tokens] (a view of the
        runner's rows: read it now, do not keep it)."""

    def finish_requests(self, req_ids: Iterable[str]) -> None:
        """These requests ended (finished or aborted); a proposer that keeps per-request state drops
        it here (and may keep their outputs to draw from). Preempted requests are not reported:
        they come back with the same tokens."""


PROPOSERS: LazyRegistry[type[Proposer]] = LazyRegistry("speculative decoding method", {
    "ngram": "pagedllm.spec_decode.ngram:NgramProposer",
    "suffix": "pagedllm.spec_decode.suffix:SuffixProposer",
})


def make_proposer(config: SpeculativeConfig) -> Proposer:
    return PROPOSERS.get(config.method)(config)
