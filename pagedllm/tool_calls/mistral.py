"""Mistral tool calls, after the [TOOL_CALLS] special token: a JSON array of {"name", "arguments"}
objects (tokenizers before v11), or name[ARGS]{...} per call, each after its own [TOOL_CALLS]
(v11 on). Text before the first [TOOL_CALLS] is the answer. Mistral's templates take only 9-letter
alphanumeric call ids, so the ids are those."""
from __future__ import annotations

import random
import string

from pagedllm.tool_calls.base import ParsedToolCall, ToolParse, ToolParser
from pagedllm.tool_calls.json_scan import NotJson, read_calls, skip_whitespace, value_end
from pagedllm.tool_calls.markers import held_text

TOOL_CALLS, ARGS = "[TOOL_CALLS]", "[ARGS]"


class MistralToolParser(ToolParser):
    needs_special_tokens = True

    def new_call_id(self) -> str:
        return "".join(random.choices(string.ascii_letters + string.digits, k=9))

    def parse(self, text: str, final: bool) -> ToolParse:
        first = text.find(TOOL_CALLS)
        if first < 0:
            return ToolParse(held_text(text, TOOL_CALLS, final))
        i = skip_whitespace(text, first + len(TOOL_CALLS))
        if i >= len(text):
            return ToolParse(text[:first])
        if text[i] == "[":
            run = read_calls(text, i + 1, final, ("arguments",), ",", "]")
            if run.first_not_a_call:
                return ToolParse(text)
            return ToolParse(text[:first], run.calls)
        calls = _named_calls(text, first, final)
        if final and not calls:  # no [ARGS] ever came: no call
            return ToolParse(text)
        return ToolParse(text[:first], calls)


def _named_calls(text: str, tag: int, final: bool) -> list[ParsedToolCall]:
    """The v11 form: [TOOL_CALLS]name[ARGS]{...} repeated. A call appears once its [ARGS] does."""
    calls = []
    while tag >= 0:
        args = text.find(ARGS, tag)
        if args < 0:
            break
        name = text[tag + len(TOOL_CALLS):args].strip()
        start = skip_whitespace(text, args + len(ARGS))
        try:
            end = value_end(text, start, final)
        except NotJson:
            end = len(text)
        if end is None:  # an open object or array: all of it so far is its start
            written = text[start:] if text.startswith(("{", "["), start) else ""
            calls.append(ParsedToolCall(name, written if not final else written or "{}"))
            break
        calls.append(ParsedToolCall(name, text[start:end]))
        tag = text.find(TOOL_CALLS, end)
    return calls
