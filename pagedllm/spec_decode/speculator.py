"""The runner's one door to speculative decoding: proposals after a step, verification in the
next, and a gate that sizes each request's drafts by how its last ones fared.

Why a gate: checking a draft token is not free on every device. A verify row costs about an
eighth of a batch-1 step on the CPU (quantized SmolLM2: 5.9 ms for one row, +0.8 ms per row), so
drafts that are always rejected (free text, sampled output) slow decoding down, while on copying
tasks they are mostly right. Per request:

- a draft accepted whole: the next may be num_speculative_tokens long;
- accepted in part (a of its tokens): the next is at most a + 1 long;
- rejected whole: the next is one token, after a wait that doubles each time it happens again in
  a row (0, 1, 3, 7, then 15 steps).

What is generated never depends on it, only how fast. Under forced (synthetic) acceptance there
is no gate: every request drafts as much as its proposer offers.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from pagedllm.sample.sampler import Sampler
from pagedllm.sample.sampling_metadata import SamplingRequest
from pagedllm.sampling_params import SamplingParams
from pagedllm.spec_decode.config import SpeculativeConfig
from pagedllm.spec_decode.proposer import DraftRequest, ProposerRuntime, make_proposer
from pagedllm.spec_decode.synthetic import SyntheticAcceptance
from pagedllm.spec_decode.verifier import DraftVerifier, RejectionFn, VerifiedBatch

if TYPE_CHECKING:
    from pagedllm.worker.request_states import RequestStates

_MAX_BACKOFF_EXPONENT = 4  # at most 2**4 - 1 = 15 steps without drafts


@dataclass(slots=True)
class _Backoff:
    limit: int  # the most draft tokens the next draft may have
    misses: int = 0  # drafts rejected whole in a row
    wait: int = 0  # steps left without drafts


class Speculator:
    def __init__(self, config: SpeculativeConfig, sampler: Sampler, runtime: ProposerRuntime | None = None,
                 rejection: RejectionFn | None = None) -> None:
        """`runtime`: the worker's device and caches for proposers that run a model; its `states`
        are the runner's, given by attach(). `rejection`: the platform's kernel of the rejection
        rule (None: the torch reference)."""
        self.config = config
        self.proposer = make_proposer(config)
        self._runtime = runtime
        synthetic = (SyntheticAcceptance(config.synthetic_conditional_rates())
                     if config.rejection_sample_method == "synthetic" else None)
        self.verifier = DraftVerifier(sampler, rejection, synthetic)
        # "strict": drafts checked by exact match even where the proposer sampled them from q
        self._use_draft_probs = config.rejection_sample_method == "probabilistic"
        self._backoff: dict[str, _Backoff] = {}
        # Forced acceptance (synthetic) draws are independent of the drafts: their history
        # predicts nothing, and the gate would only shorten the drafts the benchmark asked for.
        self._gated = synthetic is None

    def attach(self, states: RequestStates) -> None:
        """The runner's request rows (block tables, tokens), once it has built them."""
        if self._runtime is not None:
            self.proposer.bind(dataclasses.replace(self._runtime, states=states))

    @property
    def reads_target_hidden(self) -> bool:
        return self.proposer.reads_target_hidden

    def observe_target(self, req_ids: list[str], starts: list[int], counts: list[int], hidden: torch.Tensor,
                       keep: bool = True) -> None:
        """A step's target hidden states, for a proposer that drafts from them (EAGLE); keep=False:
        nothing is proposed after this step, so the proposer drops what it holds of these requests."""
        self.proposer.observe_target(req_ids, starts, counts, hidden, keep)

    def speculates(self, num_running: int) -> bool:
        """Whether a step with this many running requests proposes drafts at all."""
        return self.config.speculates(num_running)

    def verify(self, logits: torch.Tensor, rows: list[SamplingRequest], drafts: list[list[int]],
               req_ids: list[str]) -> VerifiedBatch:
        """The target's tokens at the drafted positions (logits [sum(len(d) + 1), V]), run-cut on result()."""
        draft_probs = ([self.proposer.draft_probs(r) if d else None for r, d in zip(req_ids, drafts)]
                       if self._use_draft_probs else None)
        return self.verifier.launch(logits, rows, drafts, draft_probs)

    def observe(self, req_ids: list[str], drafts: list[list[int]], runs: list[list[int]]) -> None:
        """A verify step's outcome: how many of each request's drafts were accepted."""
        if not self._gated:
            return
        backoff = self._backoff
        for req_id, d, run in zip(req_ids, drafts, runs):
            if not d:
                continue
            accepted = len(run) - 1
            state = backoff.get(req_id)
            if accepted == len(d):
                if state is not None:
                    del backoff[req_id]
                continue
            if state is None:
                state = backoff[req_id] = _Backoff(limit=1)
            state.limit = accepted + 1
            if accepted:
                state.misses = 0
                continue
            state.wait = (1 << min(state.misses, _MAX_BACKOFF_EXPONENT)) - 1
            state.misses += 1

    def propose(self, req_ids: list[str], sequences: list[np.ndarray], num_prompt_tokens: list[int],
                rows: list[int], params: list[SamplingParams]) -> dict[str, list[int]]:
        """Drafts for the requests not waiting out a backoff (those with none are left out)."""
        backoff = self._backoff
        asked = []
        for i, req_id in enumerate(req_ids):
            state = backoff.get(req_id)
            if state is not None and state.wait > 0:
                state.wait -= 1
                continue
            asked.append(DraftRequest(req_id, sequences[i], num_prompt_tokens[i], rows[i], params[i]))
        if not asked:
            return {}
        drafts = self.proposer.propose(asked)
        out = {}
        for r, d in zip(asked, drafts):
            if d:
                state = backoff.get(r.req_id)
                out[r.req_id] = d if state is None else d[:state.limit]
        return out

    def finish_requests(self, req_ids: Iterable[str]) -> None:
        for req_id in req_ids:
            self._backoff.pop(req_id, None)
        self.proposer.finish_requests(req_ids)

    def reset_requests(self, req_ids: Iterable[str]) -> None:
        """Preempted: they lost their KV blocks (the drafting state based on them goes too)."""
        self.proposer.reset_requests(req_ids)
