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
        """Per request, how many of its drafts count as accepted."""
        counts = []
        for d in drafts:
            n = len(d)
            if n == 0:
                counts.append(0)
                continue
            rejected = np.flatnonzero(self._rng.random(n) >= self.rates[:n])
            counts.append(int(rejected[0]) if rejected.size else n)
        return counts
