"""Reasoning parsers: a model's text split at its end-of-thinking tag into `reasoning_content` and
`content`, whole or streamed delta by delta (the deltas joined give exactly the whole split).

    qwen3        <think>…</think> when the model thinks (Qwen3; enable_thinking=False leaves it out,
                 the chat template having put an empty block in the prompt): text without a
                 <think> tag is all answer
    deepseek_r1  the model starts thinking at once (DeepSeek-R1's template opens <think> in the
                 prompt), so everything up to </think> is reasoning, a leading <think> dropped;
                 text that never closes the tag is all reasoning (the answer never came)

A registry names them (REASONING_PARSERS); each is a small class over one shared tag splitter.
"""
from __future__ import annotations

from dataclasses import dataclass

from pagedllm.registry import LazyRegistry
from pagedllm.tool_calls.markers import partial_suffix

REASONING_PARSERS: LazyRegistry[type[ReasoningParser]] = LazyRegistry("reasoning parser", {
    "qwen3": "pagedllm.reasoning.parsers:Qwen3ReasoningParser",
    "deepseek_r1": "pagedllm.reasoning.parsers:DeepSeekR1ReasoningParser",
})

START, END = "<think>", "</think>"


@dataclass(slots=True)
class ReasoningDelta:
    reasoning: str = ""
    content: str = ""


class ReasoningParser:
    """Whole texts: split(). Streams: a fresh parser per choice, feed() each delta, then finish()."""

    # Whether text before any tag is reasoning (the model thinks from its first token)
    starts_in_reasoning = False
    end_tag = END

    def __init__(self) -> None:
        self._pending = ""  # text that may be the beginning of a tag, held until it is decided
        self._in_reasoning: bool | None = None  # None: nothing seen yet
        self._done = False  # past </think>: everything is answer

    def split(self, text: str) -> tuple[str | None, str | None]:
        """(reasoning_content, content) of a whole output; None for a part that is absent."""
        parser = type(self)()
        out = parser.feed(text)
        last = parser.finish()
        reasoning, content = out.reasoning + last.reasoning, out.content + last.content
        if parser._in_reasoning is None or (not parser.starts_in_reasoning and not reasoning
                                            and START not in text):
            return None, content or None
        return reasoning, content or None

    def feed(self, delta: str) -> ReasoningDelta:
        """The reasoning and answer text this delta completes (a possible tag start is held back)."""
        out = ReasoningDelta()
        text = self._pending + delta
        self._pending = ""
        while text:
            if self._done:
                out.content += text
                break
            if self._in_reasoning is None:
                if START.startswith(text.lstrip()) and text.lstrip() != START and len(text.lstrip()) < len(START):
                    self._pending = text  # could still be "<think>"
                    break
                stripped = text.lstrip()
                if stripped.startswith(START):
                    self._in_reasoning = True
                    text = stripped[len(START):]
                    continue
                self._in_reasoning = self.starts_in_reasoning
                if not self._in_reasoning:
                    self._done = True  # no thinking: all answer
                    continue
            # in reasoning: up to </think>
            end = text.find(END)
            if end >= 0:
                out.reasoning += text[:end]
                self._done = True
                text = text[end + len(END):]
                continue
            keep = partial_suffix(text, END)
            out.reasoning += text[: len(text) - keep]
            self._pending = text[len(text) - keep:]
            break
        return out

    def finish(self) -> ReasoningDelta:
        """What was held back, once the stream ends."""
        text, self._pending = self._pending, ""
        if not text:
            return ReasoningDelta()
        if self._done or (self._in_reasoning is None and not self.starts_in_reasoning):
            return ReasoningDelta(content=text)
        return ReasoningDelta(reasoning=text)


def reasoning_end_text(name: str | None) -> str | None:
    """What ends a reasoning model's thinking under the named parser (None: no parser)."""
    return None if name is None else REASONING_PARSERS.get(name).end_tag


class Qwen3ReasoningParser(ReasoningParser):
    starts_in_reasoning = False


class DeepSeekR1ReasoningParser(ReasoningParser):
    starts_in_reasoning = True
