"""Pythonic tool calls (Llama 3.2 / 4 and others' templates): the output is a Python list of calls,
[get_weather(city="Paris"), get_time(zone="CET")], maybe between <|python_start|> and
<|python_end|>. Keyword values are Python literals; the arguments are their JSON. A call appears
once it is written out in full (its JSON is not the model's text, so no prefix of it is sent
early). Output that starts otherwise, or whose first element is no call, is all answer."""
from __future__ import annotations

import ast
import json
import re
from typing import Any

from pagedllm.tool_calls.base import ParsedToolCall, ToolParse, ToolParser
from pagedllm.tool_calls.json_scan import skip_whitespace
from pagedllm.tool_calls.markers import undecided_start

PYTHON_START = "<|python_start|>"
_NAME = re.compile(r"[A-Za-z_][\w.]*")
_CLOSE = {")": "(", "]": "[", "}": "{"}


class PythonicToolParser(ToolParser):
    needs_special_tokens = True  # <|python_start|>

    def parse(self, text: str, final: bool) -> ToolParse:
        rest = text.lstrip()
        i = len(text) - len(rest)
        if rest.startswith(PYTHON_START):
            i = skip_whitespace(text, i + len(PYTHON_START))
        if i >= len(text) or text[i] != "[":
            undecided = not final and undecided_start(rest, (PYTHON_START, "["))
            return ToolParse("" if undecided else text)
        calls: list[ParsedToolCall] = []
        i += 1
        while True:
            i = skip_whitespace(text, i)
            if i >= len(text) or text[i] == "]":
                break
            if calls and text[i] == ",":
                i = skip_whitespace(text, i + 1)
            end = _call_end(text, i)
            if end is None:
                if final and not calls:
                    return ToolParse(text)
                break
            call = _call(text[i:end])
            if call is None:
                return ToolParse(text) if not calls else ToolParse("", calls)
            calls.append(call)
            i = end
        return ToolParse("", calls)


def _call_end(text: str, pos: int) -> int | None:
    """The end of `name(...)` at text[pos] (brackets matched, strings skipped); None if unfinished
    or not a call (which _call then refuses)."""
    name = _NAME.match(text, pos)
    if name is None:
        return None if pos >= len(text) else pos + 1
    i = skip_whitespace(text, name.end())
    if i >= len(text):
        return None
    if text[i] != "(":
        return i + 1
    stack: list[str] = []
    while i < len(text):
        char = text[i]
        if char in "\"'":
            end = _string_end(text, i)
            if end is None:
                return None
            i = end
            continue
        if char in "([{":
            stack.append(char)
        elif char in _CLOSE:
            if not stack or stack.pop() != _CLOSE[char]:
                return i + 1
            if not stack:
                return i + 1
        i += 1
    return None


def _string_end(text: str, pos: int) -> int | None:
    quote = text[pos]
    i = pos + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return None


def _call(source: str) -> ParsedToolCall | None:
    """name(key=literal, ...) as a call with JSON arguments; None if it is not one."""
    try:
        node = ast.parse(source.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.Call) or node.args:
        return None
    name = ast.unparse(node.func)
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            return None
        try:
            arguments[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            return None
    try:
        return ParsedToolCall(name, json.dumps(arguments, ensure_ascii=False))
    except (TypeError, ValueError):  # a set, bytes or complex number has no JSON
        return None
