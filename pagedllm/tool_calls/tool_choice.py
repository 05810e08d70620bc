"""What a chat request's tools and tool_choice ask of generation and of its output.

    none       tools are only shown to the model (in the chat template); the output is all answer
    auto       the output is parsed with the server's --tool-call-parser
    required   a grammar makes the output a JSON array of one or more {"name", "parameters"}
               objects, each naming one of the tools with arguments valid for its schema (one call
               only when parallel_tool_calls is false)
    {"type": "function", "function": {"name": F}}
               a grammar makes the output F's arguments, valid for its schema

The schemas are vLLM's, so requests behave as they do there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pagedllm.sampling_params import StructuredOutputsParams
from pagedllm.tool_calls.base import ToolParser

ANY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class FunctionTool:
    name: str
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments; None: any object


def arguments_schema(tool: FunctionTool) -> dict[str, Any]:
    return tool.parameters if tool.parameters is not None else ANY_OBJECT


def required_schema(tools: list[FunctionTool], parallel: bool) -> dict[str, Any]:
    """A JSON array of calls of the given tools: at least one, at most one unless parallel."""
    call = {"anyOf": [{"type": "object",
                       "properties": {"name": {"type": "string", "enum": [tool.name]},
                                      "parameters": arguments_schema(tool)},
                       "required": ["name", "parameters"]} for tool in tools]}
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": call}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def forced_constraint(tools: list[FunctionTool], choice: str | None,
                      parallel: bool) -> tuple[StructuredOutputsParams, ToolParser] | None:
    """The grammar and the parser of its output when `choice` ("required" or a function's name)
    forces calls; None for "none" and "auto"."""
    from pagedllm.tool_calls.forced import NamedFunctionParser, RequiredToolsParser

    if choice in (None, "none", "auto"):
        return None
    # JSON as json.dumps writes it, no free whitespace: small models otherwise pad calls with
    # newlines until max_tokens
    if choice == "required":
        return (StructuredOutputsParams(json=required_schema(tools, parallel), disable_any_whitespace=True),
                RequiredToolsParser())
    named = next((tool for tool in tools if tool.name == choice), None)
    if named is None:
        raise ValueError(f"tool_choice names the function {choice!r}, which is not among the tools.")
    return (StructuredOutputsParams(json=arguments_schema(named), disable_any_whitespace=True),
            NamedFunctionParser(named.name))
