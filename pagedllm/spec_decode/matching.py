"""Where the latest tokens occurred before: the search n-gram and suffix proposals share.

    source   ... a b c x y ...  a b c x z ...
    pattern                              ... a b c      (its longest suffix found in source: "a b c",
    ends          ^4               ^9                   ending at 4 and 9; what followed: "x y", "x z")

A vectorised compare of the source with the pattern's last token, then narrowing passes over the
(usually few) matches, one token further back each: no Python loop over positions.
"""
from __future__ import annotations

import numpy as np


def match_suffix(source: np.ndarray, pattern: np.ndarray, limit: int) -> tuple[int, np.ndarray]:
    """(n, ends): the longest n <= len(pattern) such that pattern's last n tokens occur in
    source ending at each position of `ends` (ascending), all < limit; (0, empty) if the last
    token never occurs there."""
    ends = np.flatnonzero(source[:limit] == pattern[-1])
    if not len(ends):
        return 0, ends
    n, length = 1, len(pattern)
    while n < length:
        longer = ends[ends >= n]
        longer = longer[source[longer - n] == pattern[length - 1 - n]]
        if not len(longer):
            break
        ends, n = longer, n + 1
    return n, ends
