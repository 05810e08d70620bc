"""Reasoning parsers: whole outputs split at </think>, and streams cut anywhere (every single cut,
and one character at a time) joining to exactly the whole split."""
from __future__ import annotations

import pytest

from pagedllm.reasoning.parsers import REASONING_PARSERS

CASES = {
    "qwen3": [
        ("<think>\nLet me see.\n</think>\n\nParis.", ("\nLet me see.\n", "\n\nParis.")),
        ("Paris.", (None, "Paris.")),
        ("<think></think>Paris.", ("", "Paris.")),
        ("<think>still thinking", ("still thinking", None)),
        ("  <think>a</think>b", ("a", "b")),
        ("a < b and c </think> d", (None, "a < b and c </think> d")),
        ("<th", (None, "<th")),
        ("", (None, None)),
    ],
    "deepseek_r1": [
        ("Let me see.</think>Paris.", ("Let me see.", "Paris.")),
        ("<think>Let me see.</think>Paris.", ("Let me see.", "Paris.")),
        ("never ends </thi", ("never ends </thi", None)),
        ("x</think>", ("x", None)),
        ("</think>answer", ("", "answer")),
    ],
}


def _stream(name: str, pieces: list[str]) -> tuple[str, str]:
    parser = REASONING_PARSERS.get(name)()
    reasoning = content = ""
    for piece in pieces:
        out = parser.feed(piece)
        reasoning, content = reasoning + out.reasoning, content + out.content
    last = parser.finish()
    return reasoning + last.reasoning, content + last.content


@pytest.mark.parametrize("name, text, expected", [(n, t, e) for n, cases in CASES.items() for t, e in cases])
def test_whole_and_streamed(name, text, expected):
    parser = REASONING_PARSERS.get(name)()
    assert parser.split(text) == expected
    want = (expected[0] or "", expected[1] or "")
    assert _stream(name, list(text)) == want
    for cut in range(len(text) + 1):
        assert _stream(name, [text[:cut], text[cut:]]) == want, cut


def test_unknown_parser_names_the_supported():
    with pytest.raises(ValueError, match="deepseek_r1, qwen3"):
        REASONING_PARSERS.get("nope")
