"""Hermes-style tool calls (Qwen2.5, Qwen3, Hermes, SmolLM3 and others whose chat template says so):
each call a JSON object {"name": ..., "arguments": {...}} between <tool_call> and </tool_call>,
any answer text before the first. Text between or after the blocks is not content (the models put
only whitespace there)."""
from __future__ import annotations

from pagedllm.tool_calls.base import ParsedToolCall, ToolParse, ToolParser
from pagedllm.tool_calls.json_scan import OPEN, NotJson, call_in_object, skip_whitespace
from pagedllm.tool_calls.markers import held_text

START, END = "<tool_call>", "</tool_call>"


class HermesToolParser(ToolParser):
    needs_special_tokens = True  # <tool_call> is a special token in some tokenizers (Hermes 2 Pro)

    def parse(self, text: str, final: bool) -> ToolParse:
        first = text.find(START)
        if first < 0:
            return ToolParse(held_text(text, START, final))
        calls: list[ParsedToolCall] = []
        block = first
        while block >= 0:
            i = skip_whitespace(text, block + len(START))
            if i >= len(text):
                break
            try:
                call, end = call_in_object(text, i, final, ("arguments", "parameters"))
            except NotJson:
                if not calls:  # the first block is no call: the text is all answer
                    return ToolParse(text)
                break
            if call is not None:
                calls.append(call)
            if end == OPEN:
                break
            block = text.find(START, end)
        return ToolParse(text[:first], calls)
