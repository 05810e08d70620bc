"""The output of a request whose tool_choice forces calls, under the grammar tool_choice.py gives
it: a named function's arguments object, or ("required") a JSON array of {"name", "parameters"}."""
from __future__ import annotations

from pagedllm.tool_calls.base import ParsedToolCall, ToolParse, ToolParser
from pagedllm.tool_calls.json_scan import read_calls, skip_whitespace


class NamedFunctionParser(ToolParser):
    """tool_choice {"type": "function", "function": {"name": ...}}: all of the output is its arguments."""

    def __init__(self, name: str) -> None:
        self.name = name

    def parse(self, text: str, final: bool) -> ToolParse:
        return ToolParse("", [ParsedToolCall(self.name, text)])


class RequiredToolsParser(ToolParser):
    """tool_choice "required": the calls of the array."""

    def parse(self, text: str, final: bool) -> ToolParse:
        i = skip_whitespace(text, 0)
        if i >= len(text):
            return ToolParse("")
        if text[i] != "[":  # not under the grammar (which always opens the array)
            return ToolParse(text)
        run = read_calls(text, i + 1, final, ("parameters",), ",", "]")
        return ToolParse(text) if run.first_not_a_call else ToolParse("", run.calls)
