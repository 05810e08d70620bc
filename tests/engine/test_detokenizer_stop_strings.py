"""stop_strings helpers on plain text."""
from __future__ import annotations

from pagedllm.engine.stop_strings import find_stop_string, partial_stop_length


def test_find_only_in_new_region_plus_overlap():
    text = "abc STOP def ST"
    assert find_stop_string(text, 3, ["STOP"], False) is None  # old occurrence is not re-read
    text += "OP"
    assert find_stop_string(text, 2, ["STOP"], False) == ("STOP", len("abc STOP def "))
    assert find_stop_string(text, 2, ["STOP"], True) == ("STOP", -1)  # ends at the end: no cut
    assert find_stop_string("xx STOP yy", 9, ["STOP"], True) == ("STOP", 7)
    assert find_stop_string("abc", 0, ["a"], False) is None


def test_partial_stop_length():
    assert partial_stop_length("hello wor", ["world"]) == 3
    assert partial_stop_length("hello world", ["world"]) == 0  # complete: not a proper prefix
    assert partial_stop_length("aaa", ["aab"]) == 2
    assert partial_stop_length("x\n\n", ["\n\nUser:", "\n"]) == 2
    assert partial_stop_length("", ["abc"]) == 0
    assert partial_stop_length("abc", []) == 0
