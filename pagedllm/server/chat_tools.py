"""A chat request's tools, checked, and how its output is read for tool calls (tool_calls/).

Everything here runs before the request reaches the engine: a tool whose parameters are no valid
JSON schema, a tool_choice without tools or naming a function that is not among them, and "auto"
on a server that does not parse tool calls are all 400s that say so.
"""
from __future__ import annotations

from dataclasses import dataclass

from pagedllm.sampling_params import StructuredOutputsParams
from pagedllm.server.errors import bad_request
from pagedllm.server.protocol import ChatCompletionRequest, ChatTool
from pagedllm.server.settings import ServerSettings
from pagedllm.tool_calls import TOOL_PARSERS
from pagedllm.tool_calls.base import ToolParser
from pagedllm.tool_calls.tool_choice import FunctionTool, forced_constraint


@dataclass(frozen=True)
class ToolPlan:
    parser: ToolParser | None = None  # None: the output is all answer
    parallel: bool = True  # False: only the first call is kept
    constraint: StructuredOutputsParams | None = None  # the grammar of "required" or a named function

    @property
    def needs_special_tokens(self) -> bool:
        return self.parser is not None and self.parser.needs_special_tokens


NO_TOOLS = ToolPlan()


def plan_tools(request: ChatCompletionRequest, settings: ServerSettings) -> ToolPlan:
    tools = check_tools(request.tools or [])
    choice = request.tool_choice_name
    if choice == "none":
        return NO_TOOLS
    if not tools:
        raise bad_request(f"tool_choice {choice!r} needs tools.", "tool_choice")
    parallel = request.parallel_tool_calls is not False
    if choice == "auto":
        if not settings.enable_auto_tool_choice or settings.tool_call_parser is None:
            raise bad_request('"auto" tool choice needs a server started with --enable-auto-tool-choice and '
                              '--tool-call-parser; set tool_choice to "none", "required" or a named function.',
                              "tool_choice")
        return ToolPlan(TOOL_PARSERS.get(settings.tool_call_parser)(), parallel)
    try:
        forced = forced_constraint(tools, choice, parallel)
    except ValueError as e:
        raise bad_request(str(e), "tool_choice") from None
    assert forced is not None
    constraint, parser = forced
    return ToolPlan(parser, parallel, constraint)


def check_tools(tools: list[ChatTool]) -> list[FunctionTool]:
    """The tools as the grammars take them; a 400 for a repeated name or an invalid schema."""
    from pagedllm.structured_output.grammars import grammar_spec, validate

    checked: list[FunctionTool] = []
    for i, tool in enumerate(tools):
        function = tool.function
        if any(seen.name == function.name for seen in checked):
            raise bad_request(f"tools[{i}]: the function name {function.name!r} is given twice.", "tools")
        if function.parameters is not None:
            try:
                validate(grammar_spec(StructuredOutputsParams(json=function.parameters)),
                         f"tools[{i}].function.parameters")
            except ValueError as e:
                raise bad_request(str(e), "tools") from None
        checked.append(FunctionTool(function.name, function.parameters))
    return checked
