"""N-gram (prompt lookup) proposals: the tokens that followed the latest n tokens where they
appeared before in the request's own prompt and output.

    sequence   ... a b c x y z ... a b c | next?        (n = 3: "a b c" ends the sequence)
    proposal             x y z              (what followed the earlier "a b c")

The longest n in [prompt_lookup_min, prompt_lookup_max] that matches wins (matching.py); among
its matches the latest that has a whole continuation of num_speculative_tokens tokens, else the
latest.
"""
from __future__ import annotations

import numpy as np

from pagedllm.spec_decode.config import SpeculativeConfig
from pagedllm.spec_decode.matching import match_suffix
from pagedllm.spec_decode.proposer import DraftRequest, Proposer


class NgramProposer(Proposer):
    def __init__(self, config: SpeculativeConfig) -> None:
        super().__init__(config)
        self.min_n = config.prompt_lookup_min
        self.max_n = config.prompt_lookup_max

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        return [lookup(r.token_ids, self.min_n, self.max_n, self.num_speculative_tokens) for r in requests]


def lookup(seq: np.ndarray, min_n: int, max_n: int, k: int) -> list[int]:
    """Up to k tokens that followed an earlier occurrence of the longest suffix of `seq` of
    min_n..max_n tokens; [] when none occurs."""
    length = len(seq)
    if length <= min_n:
        return []
    n, ends = match_suffix(seq, seq[-max_n:], length - 1)  # an occurrence other than the suffix itself
    if n < min_n:
        return []
    whole = ends[ends + k < length]  # a continuation of k tokens
    end = int(whole[-1] if len(whole) else ends[-1])
    return seq[end + 1: end + 1 + k].tolist()
