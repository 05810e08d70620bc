"""Llama 3.1 / 3.2 JSON tool calls: the output is the call itself, {"name": ..., "parameters":
{...}} (or "arguments"), after an optional <|python_tag|>, several separated by ";". Output that
starts otherwise is all answer."""
from __future__ import annotations

from pagedllm.tool_calls.base import ToolParse, ToolParser
from pagedllm.tool_calls.json_scan import read_calls
from pagedllm.tool_calls.markers import undecided_start

PYTHON_TAG = "<|python_tag|>"


class Llama3JsonToolParser(ToolParser):
    needs_special_tokens = True  # <|python_tag|>

    def parse(self, text: str, final: bool) -> ToolParse:
        rest = text.lstrip()
        start = len(text) - len(rest)
        if rest.startswith(PYTHON_TAG):
            start += len(PYTHON_TAG)
        elif not rest.startswith("{"):
            undecided = not final and undecided_start(rest, (PYTHON_TAG, "{"))
            return ToolParse("" if undecided else text)
        run = read_calls(text, start, final, ("parameters", "arguments"), ";")
        if run.first_not_a_call:
            return ToolParse(text)
        return ToolParse("", run.calls)
