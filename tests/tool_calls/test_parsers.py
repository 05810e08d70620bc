"""Tool-call parsers on crafted model outputs: the whole response, and streams cut at every
character (and delta by delta) adding up to exactly that response."""
from __future__ import annotations

import json
import random

import pytest

from pagedllm.tool_calls import TOOL_PARSERS
from pagedllm.tool_calls.base import ExtractedToolCalls, ToolCallStream, ToolParser, extract
from pagedllm.tool_calls.forced import NamedFunctionParser, RequiredToolsParser

WEATHER = ("get_weather", '{"city": "Paris", "unit": "celsius"}')
TIME = ("get_time", "{}")

CASES = [
    # hermes: text first, two blocks, whitespace between
    ("hermes", 'Let me check.\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": '
               '"celsius"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
     "Let me check.", [WEATHER, TIME]),
    ("hermes", "No tools: a < sign, a <tool word, a <tool_ca", "No tools: a < sign, a <tool word, a <tool_ca", []),
    ("hermes", "Text that ends with spaces  \n", "Text that ends with spaces  \n", []),
    ("hermes", "<tool_call>\nnot json\n</tool_call>", "<tool_call>\nnot json\n</tool_call>", []),
    # braces and escaped quotes inside strings; the name after the arguments
    ("hermes", '<tool_call>{"arguments": {"a": [1, {"b": "}\\"{"}], "c": null}, "name": "f"}</tool_call>', None,
     [("f", '{"a": [1, {"b": "}\\"{"}], "c": null}')]),
    # arguments as a JSON string (some fine-tunes); "parameters"; no arguments at all
    ("hermes", '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>', None, [("f", '{"a": 1}')]),
    ("hermes", '<tool_call>{"name": "f", "parameters": {"a": 1}}</tool_call>', None, [("f", '{"a": 1}')]),
    ("hermes", '<tool_call>{"name": "get_time"}</tool_call>', None, [TIME]),
    # cut off by max_tokens: the call stays, with what was written
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": "unfinish', None, [("f", '{"a": "unfinish')]),
    ("hermes", '<tool_call>{"name": 7, "arguments": {}}</tool_call>', '<tool_call>{"name": 7, "arguments": {}}</tool_call>',
     []),
    ("hermes", 'Ünïcödé ✓ <tool_call>{"name": "f", "arguments": {"s": "✓ 東京"}}</tool_call>', "Ünïcödé ✓",
     [("f", '{"s": "✓ 東京"}')]),
    # llama3_json
    ("llama3_json", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
                    '{"name": "get_time", "parameters": {}}', None, [WEATHER, TIME]),
    ("llama3_json", '  {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}', None, [WEATHER]),
    ("llama3_json", "Hello there, {not a call}", "Hello there, {not a call}", []),
    ("llama3_json", '{"a": 1, "b": [2]}', '{"a": 1, "b": [2]}', []),
    ("llama3_json", '{"name": "f", "parameters": {"x": tru', None, [("f", '{"x": tru')]),
    # mistral: the array form and the v11 form
    ("mistral", 'Sure.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
                '{"name": "get_time", "arguments": {}}]', "Sure.", [WEATHER, TIME]),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}[TOOL_CALLS]get_time[ARGS]{}', None,
     [WEATHER, TIME]),
    ("mistral", "Just an answer [TOOL", "Just an answer [TOOL", []),
    ("mistral", "[TOOL_CALLS] oops", "[TOOL_CALLS] oops", []),
    # pythonic
    ("pythonic", '[get_weather(city="Paris", unit=\'celsius\'), get_time()]', None, [WEATHER, TIME]),
    ("pythonic", '<|python_start|>[f(s="a)b]\\"", n=[1, {"k": None}], ok=True)]<|python_end|>', None,
     [("f", '{"s": "a)b]\\"", "n": [1, {"k": null}], "ok": true}')]),
    ("pythonic", "[1, 2, 3]", "[1, 2, 3]", []),
    ("pythonic", "[f(1)]", "[f(1)]", []),  # positional arguments: no call
    ("pythonic", "Plain answer.", "Plain answer.", []),
    ("pythonic", '[f(x="unfinished', "[f(x=\"unfinished", []),
]


def _whole(name: str, text: str) -> ExtractedToolCalls:
    return extract(TOOL_PARSERS.get(name)(), text)


def _assembled(parser: ToolParser, pieces: list[str]) -> tuple[str, list[tuple[str, str]], list[str]]:
    stream = ToolCallStream(parser)
    content, calls, ids = "", [], []
    for news in [*(stream.feed(p) for p in pieces), stream.finish()]:
        content += news.content
        for delta in news.calls:
            if delta.id is not None:  # a call's first delta: id and name
                assert delta.index == len(calls) and delta.name is not None
                calls.append((delta.name, ""))
                ids.append(delta.id)
            assert delta.index < len(calls)
            calls[delta.index] = (calls[delta.index][0], calls[delta.index][1] + delta.arguments)
    return content, calls, ids


@pytest.mark.parametrize("name,text,content,calls", CASES)
def test_whole_output(name, text, content, calls):
    whole = _whole(name, text)
    assert whole.content == content
    assert [(c.name, c.arguments) for c in whole.calls] == calls
    for call in whole.calls:
        if not text.rstrip().endswith(("unfinish", "tru")):
            json.loads(call.arguments)


@pytest.mark.parametrize("name,text,content,calls", CASES)
def test_streams_cut_anywhere_add_up_to_the_whole(name, text, content, calls):
    parser_class = TOOL_PARSERS.get(name)
    want = (content or "", calls)
    for cut in range(len(text) + 1):
        got = _assembled(parser_class(), [text[:cut], text[cut:]])
        assert got[:2] == want, cut
    assert _assembled(parser_class(), list(text))[:2] == want  # a character at a time
    rng = random.Random(len(text))
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text), 4)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        assert _assembled(parser_class(), pieces)[:2] == want


def test_ids():
    _, _, ids = _assembled(TOOL_PARSERS.get("hermes")(), [CASES[0][1]])
    assert len(ids) == 2 and len(set(ids)) == 2 and all(i.startswith("call_") and len(i) == 29 for i in ids)
    _, _, ids = _assembled(TOOL_PARSERS.get("mistral")(), [CASES[16][1]])
    assert all(len(i) == 9 and i.isalnum() for i in ids)  # Mistral's templates take only these


def test_parallel_false_keeps_the_first_call():
    whole = extract(TOOL_PARSERS.get("hermes")(), CASES[0][1], parallel=False)
    assert [c.name for c in whole.calls] == ["get_weather"]
    stream = ToolCallStream(TOOL_PARSERS.get("hermes")(), parallel=False)
    news = [stream.feed(CASES[0][1]), stream.finish()]
    assert {d.index for n in news for d in n.calls} == {0}


def test_forced_parsers():
    named = NamedFunctionParser("get_weather")
    assert _assembled(named, list(WEATHER[1]))[:2] == ("", [WEATHER])
    required = '[{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}, ' \
               '{"name": "get_time", "parameters": {}}]'
    assert extract(RequiredToolsParser(), required).calls == extract(TOOL_PARSERS.get("hermes")(), CASES[0][1]).calls
    for cut in range(len(required) + 1):
        assert _assembled(RequiredToolsParser(), [required[:cut], required[cut:]])[:2] == ("", [WEATHER, TIME])


def test_unknown_parser_names_the_supported_ones():
    with pytest.raises(ValueError, match="hermes, llama3_json, mistral, pythonic"):
        TOOL_PARSERS.get("nope")
