"""Proposers for tests that know the answer: drafts that are always right (the target as its own
draft) or always wrong, from the reference outputs a test registers."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pagedllm.spec_decode.config import PROPOSERS
from pagedllm.spec_decode.proposer import DraftRequest, Proposer


class OracleProposer(Proposer):
    """Proposes the next num_speculative_tokens tokens of the registered reference output."""

    references: dict[tuple[int, ...], list[int]] = {}  # prompt token ids -> the target's own output
    shift = 0  # added to every draft token: nonzero makes every draft wrong

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        drafts = []
        for r in requests:
            reference = self.references.get(tuple(r.token_ids[: r.num_prompt_tokens].tolist()), [])
            done = len(r.token_ids) - r.num_prompt_tokens
            drafts.append([t + self.shift for t in reference[done: done + self.num_speculative_tokens]])
        return drafts


class WrongOracleProposer(OracleProposer):
    shift = 1


@contextmanager
def oracle_methods(references: dict[tuple[int, ...], list[int]]) -> Iterator[None]:
    """Methods "oracle" and "oracle_wrong" for the duration, drafting from `references`."""
    OracleProposer.references = references
    PROPOSERS.register("oracle", "tests.helpers.spec_oracle:OracleProposer")
    PROPOSERS.register("oracle_wrong", "tests.helpers.spec_oracle:WrongOracleProposer")
    try:
        yield
    finally:
        PROPOSERS.unregister("oracle")
        PROPOSERS.unregister("oracle_wrong")
        OracleProposer.references = {}
