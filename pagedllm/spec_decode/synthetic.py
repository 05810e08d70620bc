"""Forced acceptance for benchmarks (`"rejection_sample_method": "synthetic"`, vLLM's): how fast
speculation is at a given acceptance rate, whatever the drafts are.

Each request's draft j is accepted with a fixed conditional probability (its drafts before it
accepted), drawn on the host from a seeded generator; the run is the accepted drafts and then the
target's own token at the first position not accepted. The device does exactly the work of a real
verify step (every position scored and sampled): only the cut differs. The output is not the
target's distribution, which is why this is a benchmark mode and nothing else.
"""
from __future__ import annotations

import numpy as np


class SyntheticAcceptance:
    def __init__(self, conditional_rates: list[float], seed: int = 0) -> None:
        self.rates = np.asarray(conditional_rates, dtype=np.float64)  # [k]
        self._rng = np.random.default_rng(seed)

    def num_accepted(self, drafts: list[list[int]]) -> list[int]:
        """Per request, how many of its drafts count as accepted: the first position whose draw
        fails its rate (one draw per position, all requests at once)."""
        k = len(self.rates)
        lengths = np.fromiter((len(d) for d in drafts), dtype=np.int64, count=len(drafts))
        # a position past a request's drafts fails, so a run never goes beyond them
        passed = (self._rng.random((len(drafts), k)) < self.rates) & (np.arange(k) < lengths[:, None])
        first_fail = np.where(passed.all(axis=1), k, passed.argmin(axis=1))
        counts: list[int] = np.minimum(first_fail, lengths).tolist()
        return counts
