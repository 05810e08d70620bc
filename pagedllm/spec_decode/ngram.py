"""N-gram (prompt lookup) proposals: the tokens that followed the latest n tokens where they
appeared before in the request's own prompt and output.

    sequence   ... a b c x y z ... a b c | next?        (n = 3: "a b c" ends the sequence)
    proposal             x y z              (what followed the earlier "a b c")

The longest n in [prompt_lookup_min, prompt_lookup_max] that matches wins; among its matches the
latest that has a whole continuation of num_speculative_tokens tokens, else the latest. Work per
request is a vectorised compare of the sequence with its last token and a few narrowing passes
over the (usually few) matches, not a Python loop over positions.
"""
from __future__ import annotations

import numpy as np

from pagedllm.spec_decode.config import SpeculativeConfig
from pagedllm.spec_decode.proposer import Proposer


class NgramProposer(Proposer):
    def __init__(self, config: SpeculativeConfig) -> None:
        super().__init__(config)
        self.min_n = config.prompt_lookup_min
        self.max_n = config.prompt_lookup_max

    def propose(self, req_ids: list[str], sequences: list[np.ndarray]) -> list[list[int]]:
        return [lookup(seq, self.min_n, self.max_n, self.num_speculative_tokens) for seq in sequences]


def lookup(seq: np.ndarray, min_n: int, max_n: int, k: int) -> list[int]:
    """Up to k tokens that followed an earlier occurrence of the longest suffix of `seq` of
    min_n..max_n tokens; [] when none occurs."""
    length = len(seq)
    if length <= min_n:
        return []
    # ends[i]: the position where an earlier occurrence of the suffix ends; first one token long
    ends = np.flatnonzero(seq[: length - 1] == seq[length - 1])
    n = 1
    while len(ends) and n < max_n and n < length - 1:
        longer = ends[ends >= n]
        longer = longer[seq[longer - n] == seq[length - 1 - n]]
        if not len(longer):
            break
        ends, n = longer, n + 1
    if not len(ends) or n < min_n:
        return []
    whole = ends[ends + k < length]  # a continuation of k tokens
    end = int(whole[-1] if len(whole) else ends[-1])
    return seq[end + 1: end + 1 + k].tolist()
