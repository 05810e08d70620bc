"""What a tool-call parser gives, and how its results become whole responses or stream deltas.

A parser is a pure function of the text so far: `parse(text, final)` says which part of it is
answer (`content`) and which tool calls it holds, as far as that text decides them. It must be
*monotone*: for any prefix of a text, the prefix's parse (final=False) is the start of the whole
text's parse (final=True) — its content a prefix of the whole content, its calls the first calls,
each with the same name and arguments that are a prefix of the final arguments. A parser holds back
what it cannot decide yet (a possible tag, a call's name still being written) rather than guess.

`ToolCallStream` diffs successive parses into OpenAI's deltas, and `extract` takes the final parse
of a whole text; monotonicity makes the deltas of a stream add up to exactly the whole response,
however the text was cut (tests cut at every character).

Content next to tool calls: trailing whitespace is held back while the text goes on, and dropped
when the output has tool calls ("Sure!\n\n<tool_call>..." answers "Sure!"); empty content is None.
"""
from __future__ import annotations

import random
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ParsedToolCall:
    name: str
    arguments: str  # JSON text of the arguments (so far, while the call is being written)


@dataclass(frozen=True, slots=True)
class ToolParse:
    content: str  # answer text decided so far, outside any tool call
    calls: list[ParsedToolCall] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One call's news in a stream chunk: id and name the first time, then argument fragments."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolDeltas:
    content: str = ""
    calls: list[ToolCallDelta] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExtractedToolCalls:
    content: str | None
    calls: list[ParsedToolCall]


class ToolParser(ABC):
    # Whether the markers it looks for are special tokens, which detokenizing would otherwise drop
    needs_special_tokens = False

    @abstractmethod
    def parse(self, text: str, final: bool) -> ToolParse:
        """The content and calls `text` decides; `final`: the output ends here (undecided text is
        then settled: a held possible marker becomes content, an unfinished call stays a call)."""

    def new_call_id(self) -> str:
        """A tool call's id, as OpenAI writes them."""
        return "call_" + "".join(random.choices(string.ascii_letters + string.digits, k=24))


def visible_content(parse: ToolParse, final: bool) -> str:
    """The content a client may be shown of this parse (see the module docstring); "" for none."""
    if not final or parse.calls:
        return parse.content.rstrip()
    return parse.content


def extract(parser: ToolParser, text: str, parallel: bool = True) -> ExtractedToolCalls:
    """A whole output's content (None when empty) and tool calls; `parallel` False keeps the first."""
    parse = parser.parse(text, True)
    content = visible_content(parse, True)
    return ExtractedToolCalls(content or None, parse.calls if parallel else parse.calls[:1])


class ToolCallStream:
    """One streamed choice: feed() each text delta, then finish(); each returns what is new."""

    def __init__(self, parser: ToolParser, parallel: bool = True) -> None:
        self.parser = parser
        self.parallel = parallel
        self._text = ""
        self._content_sent = 0
        self._args_sent: list[int] = []  # per call started: characters of its arguments sent

    def feed(self, delta: str) -> ToolDeltas:
        self._text += delta
        return self._news(self.parser.parse(self._text, False), False)

    def finish(self) -> ToolDeltas:
        return self._news(self.parser.parse(self._text, True), True)

    @property
    def has_calls(self) -> bool:
        return bool(self._args_sent)

    def _news(self, parse: ToolParse, final: bool) -> ToolDeltas:
        content = visible_content(parse, final)
        new_content = content[self._content_sent:]
        self._content_sent = max(self._content_sent, len(content))
        calls = parse.calls if self.parallel else parse.calls[:1]
        news = []
        for index, call in enumerate(calls):
            if index == len(self._args_sent):
                self._args_sent.append(len(call.arguments))
                news.append(ToolCallDelta(index, call.arguments, self.parser.new_call_id(), call.name))
            elif len(call.arguments) > self._args_sent[index]:
                news.append(ToolCallDelta(index, call.arguments[self._args_sent[index]:]))
                self._args_sent[index] = len(call.arguments)
        return ToolDeltas(new_content, news)
