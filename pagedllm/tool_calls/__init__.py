"""Tool calls in a model's output: parsers by name (`--tool-call-parser`), and the constraints that
make `tool_choice` "required" or a named function always produce a valid call."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pagedllm.registry import LazyRegistry

if TYPE_CHECKING:
    from pagedllm.tool_calls.base import ToolParser

TOOL_PARSERS: LazyRegistry[type[ToolParser]] = LazyRegistry("tool call parser", {
    "hermes": "pagedllm.tool_calls.hermes:HermesToolParser",
    "llama3_json": "pagedllm.tool_calls.llama3_json:Llama3JsonToolParser",
    "mistral": "pagedllm.tool_calls.mistral:MistralToolParser",
    "pythonic": "pagedllm.tool_calls.pythonic:PythonicToolParser",
})
