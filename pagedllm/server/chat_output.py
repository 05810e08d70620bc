"""One chat choice's text read into OpenAI's message: the thinking (--reasoning-parser) as
reasoning_content, then the answer as content and the tool calls in it (the request's ToolPlan) as
tool_calls; whole, or delta by delta for a stream. A stream's deltas add up to exactly the whole
message (the parsers are monotone: reasoning/parsers.py, tool_calls/base.py).

finish_reason "stop" becomes "tool_calls" when the message holds calls (OpenAI's); "length" stays.
"""
from __future__ import annotations

from pagedllm.reasoning.parsers import ReasoningParser
from pagedllm.server.chat_tools import ToolPlan
from pagedllm.server.protocol_responses import (
    ChatResponseMessage,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
)
from pagedllm.tool_calls.base import ToolCallStream, extract


def _finish_reason(reason: str | None, has_calls: bool) -> str | None:
    return "tool_calls" if has_calls and reason == "stop" else reason


class ChoiceReader:
    """Whole outputs: message(). Streams: a fresh reader per choice, delta() each output delta."""

    def __init__(self, reasoning: ReasoningParser | None, tools: ToolPlan) -> None:
        self.reasoning = reasoning
        self.tools = tools
        self._stream = None if tools.parser is None else ToolCallStream(tools.parser, tools.parallel)

    def message(self, text: str, finish_reason: str | None) -> tuple[ChatResponseMessage, str | None]:
        reasoning, content = (None, text) if self.reasoning is None else self.reasoning.split(text)
        parser = self.tools.parser
        if parser is None:
            return ChatResponseMessage(content=content, reasoning_content=reasoning), finish_reason
        found = extract(parser, content or "", self.tools.parallel)
        calls = [ToolCall(id=parser.new_call_id(), function=FunctionCall(name=c.name, arguments=c.arguments))
                 for c in found.calls]
        message = ChatResponseMessage(content=found.content, reasoning_content=reasoning, tool_calls=calls)
        return message, _finish_reason(finish_reason, bool(calls))

    def delta(self, text: str, finish_reason: str | None) -> tuple[DeltaMessage, str | None]:
        finished = finish_reason is not None
        reasoning = None
        if self.reasoning is not None:  # the thinking as reasoning_content deltas, then the answer
            split = self.reasoning.feed(text)
            if finished:
                last = self.reasoning.finish()
                split.reasoning, split.content = split.reasoning + last.reasoning, split.content + last.content
            reasoning, text = split.reasoning or None, split.content
        if self._stream is None:
            # The last delta of a choice carries its finish_reason; content is left out when empty ({}).
            empty = None if finished or self.reasoning is not None else ""
            return DeltaMessage(content=text or empty, reasoning_content=reasoning), finish_reason
        news = [self._stream.feed(text)]
        if finished:
            news.append(self._stream.finish())
        content = "".join(n.content for n in news)
        calls = [DeltaToolCall(index=c.index, id=c.id, function=DeltaFunctionCall(name=c.name, arguments=c.arguments))
                 for n in news for c in n.calls]
        delta = DeltaMessage(content=content or None, reasoning_content=reasoning, tool_calls=calls or None)
        return delta, _finish_reason(finish_reason, self._stream.has_calls)
