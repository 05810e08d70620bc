"""What the scheduler asks of structured outputs' grammar state (no torch, no xgrammar here: the
engine core's StructuredOutputManager implements it)."""
from __future__ import annotations

import enum
from typing import Protocol

from pagedllm.core.request import Request


class GrammarState(enum.Enum):
    GOING = 0  # more tokens to come
    COMPLETE = 1  # the grammar is complete: the request stops
    VIOLATED = 2  # a kept token is outside the grammar (nothing was allowed): the request is aborted


class GrammarHooks(Protocol):
    def ready(self, request: Request) -> bool:
        """Whether the request's grammar is compiled (or failed to: see failure)."""

    def failure(self, request: Request) -> str | None:
        """Why the request's grammar could not compile; None if it compiled."""

    def accept(self, request: Request, token_ids: list[int]) -> GrammarState:
        """Advance the request's grammar by the tokens it kept."""

    def valid_prefix(self, request: Request, drafts: list[int]) -> list[int]:
        """The longest prefix of the drafts that the request's grammar allows after its tokens."""

    def release(self, request: Request) -> None:
        """The request finished: drop its grammar state."""
