"""The n-gram and suffix proposers on hand-made sequences."""
from __future__ import annotations

import numpy as np

from pagedllm.spec_decode.config import SpeculativeConfig
from pagedllm.spec_decode.matching import match_suffix
from pagedllm.spec_decode.ngram import lookup
from pagedllm.spec_decode.proposer import DraftRequest, make_proposer
from pagedllm.spec_decode.suffix import continuations, frequent_path


def a(*tokens: int) -> np.ndarray:
    return np.array(tokens, dtype=np.int64)


def test_match_suffix_finds_the_longest_match_and_all_its_places():
    source = a(1, 2, 3, 9, 2, 3, 8, 1, 2, 3)
    n, ends = match_suffix(source, a(1, 2, 3), limit=len(source) - 1)
    assert n == 3 and ends.tolist() == [2]
    n, ends = match_suffix(source, a(7, 2, 3), limit=len(source) - 1)
    assert n == 2 and ends.tolist() == [2, 5]
    assert match_suffix(source, a(5), limit=len(source))[0] == 0


def test_ngram_proposes_what_followed_the_longest_match():
    seq = a(5, 1, 2, 3, 4, 6, 7, 9, 1, 2, 3)
    assert lookup(seq, 2, 3, 3) == [4, 6, 7]
    assert lookup(seq, 2, 3, 10) == [4, 6, 7, 9, 1, 2, 3]  # up to the end of the sequence
    assert lookup(seq, 4, 5, 3) == []  # no 4-gram match
    assert lookup(a(1, 2, 3), 1, 3, 2) == []  # the suffix itself is not an earlier occurrence


def test_ngram_prefers_the_latest_match_with_a_whole_continuation():
    seq = a(1, 2, 10, 11, 1, 2, 20, 21, 1, 2)
    assert lookup(seq, 2, 2, 2) == [20, 21]
    periodic = a(7, 7, 7, 7, 7)
    assert lookup(periodic, 1, 2, 2) == [7, 7]


def test_ngram_proposer_caps_at_k():
    proposer = make_proposer(SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 2,
                                                          "prompt_lookup_min": 1, "prompt_lookup_max": 3}))
    seq = a(1, 2, 3, 4, 5, 1, 2)
    assert proposer.propose([DraftRequest("r", seq, 3, 0)]) == [[3, 4]]


def test_frequent_path_follows_counts_until_the_probability_drops():
    conts = a(1, 2, 3, 1, 2, 4, 1, 2, 3, 5, 6, 7).reshape(4, 3)
    # first token: 1 (3 of 4), then 2 (3 of 3), then 3 (2 of 3): probs 0.75, 0.75, 0.5
    assert frequent_path(conts, 0.1) == ([1, 2, 3], 0.75 + 0.75 + 0.5)
    assert frequent_path(conts, 0.6)[0] == [1, 2]
    assert frequent_path(conts, 0.8)[0] == []


def test_continuations_stop_at_separators_and_the_end():
    source = a(1, 2, 3, -1, 1, 2)
    assert continuations(source, a(0, 4), 3).tolist() == [[2, 3, -1], [2, -1, -1]]


def _suffix(**extra) -> object:
    return make_proposer(SpeculativeConfig.from_user({"method": "suffix", "num_speculative_tokens": 8, **extra}))


def test_suffix_proposes_from_the_request_itself():
    proposer = _suffix()
    seq = a(9, 1, 2, 3, 4, 5, 6, 8, 1, 2, 3)
    # match "1 2 3" (3 tokens): at most 3 drafts (max_spec_factor 1.0)
    assert proposer.propose([DraftRequest("r", seq, 2, 0)]) == [[4, 5, 6]]


def test_suffix_draws_on_finished_requests_outputs():
    proposer = _suffix()
    proposer.propose([DraftRequest("old", a(100, 101, 1, 2, 3, 4, 5, 6, 7, 8), 2, 0)])
    proposer.finish_requests(["old"])
    new = a(200, 201, 202, 1, 2, 3, 4)
    assert proposer.propose([DraftRequest("new", new, 3, 0)]) == [[5, 6, 7, 8]]
    none = _suffix(suffix_decoding_max_cached_requests=0)
    none.propose([DraftRequest("old", a(100, 101, 1, 2, 3, 4, 5, 6, 7, 8), 2, 0)])
    none.finish_requests(["old"])
    assert none.propose([DraftRequest("new", new, 3, 0)]) == [[]]


def test_suffix_cache_keeps_the_latest_requests():
    proposer = _suffix(suffix_decoding_max_cached_requests=1)
    proposer.propose([DraftRequest("a", a(0, 1, 2, 3, 4), 1, 0)])
    proposer.propose([DraftRequest("b", a(0, 1, 2, 5, 6), 1, 0)])
    proposer.finish_requests(["a"])
    proposer.finish_requests(["b"])
    assert proposer.propose([DraftRequest("c", a(9, 1, 2), 1, 0)]) == [[5, 6]]
