"""Suffix decoding (SuffixDecoding, Oliaro et al. 2024; vLLM's `suffix` method): proposals of
varying length, ranked by how often they followed the latest tokens before.

Two sources are searched: the request's own prompt and output, and the outputs of the last
`suffix_decoding_max_cached_requests` finished requests (agents, code edits and repeated tasks
produce much the same text again). In each source:

1. match: the longest suffix of the latest `suffix_decoding_max_tree_depth` tokens that occurred
   before, and every place it did (matching.py);
2. count: the continuations after those places form a trie, a node counting the places whose
   continuation passes through it (this is the subtree a suffix tree holds under the match);
3. follow the trie's most frequent child while the estimated probability of the path (the product
   of child count / children total along it) stays >= `suffix_decoding_min_token_prob`, for at
   most max_spec_factor x the match length and num_speculative_tokens tokens.

The source whose path scores higher (its tokens' probabilities summed) gives the drafts.

The sources are kept as token arrays and searched per step rather than held as a suffix tree: a
tree's node per (position, depth) would cost hundreds of bytes each as Python objects, gigabytes
for vLLM's cache size, while an array costs 8 bytes a token and its search is a few vectorised
compares. The counts of step 2 are the same either way.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from pagedllm.spec_decode.config import SpeculativeConfig
from pagedllm.spec_decode.matching import match_suffix
from pagedllm.spec_decode.proposer import DraftRequest, Proposer

_SEPARATOR = -1  # between outputs in the cache: no match or continuation runs across it
# Continuations of at most this many places (the latest) are counted: the estimate is as good
# and the work bounded for very common suffixes.
_MAX_PLACES = 256


class SuffixProposer(Proposer):
    def __init__(self, config: SpeculativeConfig) -> None:
        super().__init__(config)
        self.max_depth = config.suffix_decoding_max_tree_depth
        self.max_spec_factor = config.suffix_decoding_max_spec_factor
        self.min_token_prob = config.suffix_decoding_min_token_prob
        self.max_cached_requests = config.suffix_decoding_max_cached_requests
        self._outputs: dict[str, np.ndarray] = {}  # running request -> its output so far
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()  # finished outputs, oldest first
        self._cache_tokens: np.ndarray | None = None  # the cache joined by separators; None: rebuild

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        cache = self._joined_cache()
        drafts = []
        for r in requests:
            tokens = r.token_ids
            if self.max_cached_requests:
                self._outputs[r.req_id] = tokens[r.num_prompt_tokens:].copy()
            pattern = tokens[-self.max_depth:]
            own, own_score = self._path(tokens, pattern, len(tokens) - 1)
            if cache is not None:
                shared, shared_score = self._path(cache, pattern, len(cache))
                if shared_score > own_score:
                    own = shared
            drafts.append(own)
        return drafts

    def finish_requests(self, req_ids: Iterable[str]) -> None:
        for req_id in req_ids:
            output = self._outputs.pop(req_id, None)
            if output is None or not len(output):
                continue
            self._cache[req_id] = output
            self._cache.move_to_end(req_id)
            while len(self._cache) > self.max_cached_requests:
                self._cache.popitem(last=False)
            self._cache_tokens = None

    def _joined_cache(self) -> np.ndarray | None:
        if not self._cache:
            return None
        if self._cache_tokens is None:
            pieces: list[np.ndarray] = []
            for output in self._cache.values():
                pieces.append(output)
                pieces.append(np.array([_SEPARATOR], dtype=output.dtype))
            self._cache_tokens = np.concatenate(pieces)
        return self._cache_tokens

    def _path(self, source: np.ndarray, pattern: np.ndarray, limit: int) -> tuple[list[int], float]:
        """The most frequent continuation of the longest match of `pattern` in source[:limit]
        (matches end before `limit`), and its score."""
        n, ends = match_suffix(source, pattern, limit)
        max_len = min(self.num_speculative_tokens, int(self.max_spec_factor * n))
        if max_len < 1:
            return [], 0.0
        return frequent_path(continuations(source, ends[-_MAX_PLACES:], max_len), self.min_token_prob)


def continuations(source: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """[places, length] the tokens after each end, -1 past the source's end or a separator."""
    index = ends[:, None] + 1 + np.arange(length)  # [places, length]
    tokens = np.where(index < len(source), source[np.minimum(index, len(source) - 1)], _SEPARATOR)
    return np.where(np.cumsum(tokens == _SEPARATOR, axis=1) > 0, _SEPARATOR, tokens)


def frequent_path(conts: np.ndarray, min_prob: float) -> tuple[list[int], float]:
    """Follow the most frequent next token of the continuations `conts` [places, length] while
    the path's probability stays >= min_prob; (its tokens, the sum of their probabilities)."""
    alive = np.ones(len(conts), dtype=bool)
    path: list[int] = []
    prob = 1.0
    score = 0.0
    for j in range(conts.shape[1]):
        column = conts[alive, j]
        column = column[column != _SEPARATOR]
        if not len(column):
            break
        values, counts = np.unique(column, return_counts=True)
        best = int(counts.argmax())
        prob *= counts[best] / len(column)
        if prob < min_prob:
            break
        token = int(values[best])
        path.append(token)
        score += prob
        alive &= conts[:, j] == token
    return path, score
