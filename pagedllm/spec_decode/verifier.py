"""Checking drafts: the target model's own token at every drafted position, and the accepted run.

A request with drafts d1..dk is scored at k + 1 positions in one step. Position j is sampled
exactly as a step without speculation would sample it had d1..dj been generated: the same
processed logits (logit_bias, min_tokens, penalties over outputs + d1..dj), the same
temperature / top-k / top-p / min-p, and the same noise (a seeded request's draw comes from its
(seed, output index) generator). Drafts are accepted while they equal those tokens; the first
token that differs, or the one after the last draft, ends the run:

    drafts            d1   d2   d3
    target's tokens   t0   t1   t2   t3         t0 == d1, t1 == d2, t2 != d3
    run               t0   t1   t2              (2 drafts accepted, t2 is the target's own)

For drafts that are fixed tokens (n-gram, suffix, greedy drafts: no draft distribution q), this is
the standard rejection rule exactly: d is accepted with probability p(d) = min(1, p(d)/q(d)) for
q = one-hot(d), and when it is not, the token comes from p restricted to tokens other than d, which
is norm(max(0, p - q)). The run is then the very sequence a step-by-step decode would produce with
the same noise, so greedy output is unchanged and seeded output too (float numerics aside).

Drafts sampled from a draft distribution q (a draft model's, for sampled requests) go through the
rule itself (rejection.py): each is accepted with probability min(1, p/q) and the first rejected
one is replaced by a draw from norm(max(0, p - q)); after a run accepted whole, the next token is
the plain sample of that position. Its draws come from the request's (seed, position) generators
on their own stream, so a seeded request still gives the same tokens in any batch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pagedllm.outputs import LogprobsLists
from pagedllm.sample.host_copy import HostCopy
from pagedllm.sample.logprobs import compute_token_logprobs
from pagedllm.sample.sampler import SampledBatch, Sampler
from pagedllm.sample.sampling_metadata import SamplingRequest, has_penalty, make_sampling_metadata, to_device
from pagedllm.sample.seeding import position_generator
from pagedllm.spec_decode.rejection import rejection_sample
from pagedllm.spec_decode.synthetic import SyntheticAcceptance

# The seeded stream of the acceptance and recovery draws (0 is the token's own sample).
ACCEPT_STREAM = 1
# (target_probs, draft_probs, draft_ids, u_accept, u_recover) -> (accepted, recovered): rejection.py's
RejectionFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(slots=True)
class VerifiedOutput:
    token_runs: list[list[int]]  # [num_reqs] the accepted drafts and then the target's own token
    logprobs: list[LogprobsLists | None]  # [num_reqs] one row per token of the run, for those that asked


def expand_rows(rows: list[SamplingRequest], drafts: list[list[int]]) -> list[SamplingRequest]:
    """One sampling row per scored position: request i's position j sees d1..dj as generated.
    Only penalties read the output tokens themselves; other rows just count them (seeds,
    min_tokens), through num_pending, without copying the output list."""
    expanded: list[SamplingRequest] = []
    for row, d in zip(rows, drafts):
        expanded.append(row)
        if not d:
            continue
        if has_penalty(row.params):
            expanded.extend(SamplingRequest(row.params, row.prompt_token_ids, row.output_token_ids + d[:j],
                                            row.eos_token_id, row.num_pending) for j in range(1, len(d) + 1))
        else:
            expanded.extend(SamplingRequest(row.params, row.prompt_token_ids, row.output_token_ids,
                                            row.eos_token_id, row.num_pending + j) for j in range(1, len(d) + 1))
    return expanded


def accepted_runs(tokens: list[int], drafts: list[list[int]]) -> list[tuple[int, int]]:
    """(first row, run length) of each request in `tokens` (the target's token at every scored
    position, requests one after another, len(drafts[i]) + 1 rows each)."""
    runs = []
    start = 0
    for d in drafts:
        n = 0
        while n < len(d) and tokens[start + n] == d[n]:
            n += 1
        runs.append((start, n + 1))
        start += len(d) + 1
    return runs


@dataclass(slots=True)
class _Rejections:
    """The rejection rule's outcome for the requests whose drafts came with a distribution."""

    requests: list[int]  # request indices, in the order of their drafted positions below
    copy: HostCopy  # of accepted [R] bool and recovered [R] int64, per drafted position


class VerifiedBatch:
    """A verifying step's tokens as queued on the device; `result()` reads them and cuts the runs."""

    def __init__(self, batch: SampledBatch, drafts: list[list[int]], rows: list[SamplingRequest],
                 logits: torch.Tensor, rejections: _Rejections | None = None,
                 synthetic: SyntheticAcceptance | None = None) -> None:
        self._batch = batch
        self.drafts = drafts  # [num_reqs] the drafts checked
        self._rows = rows
        self._logits = logits
        self._rejections = rejections
        self._synthetic = synthetic
        self._result: VerifiedOutput | None = None

    @property
    def sampled(self) -> torch.Tensor:
        """[rows] the target's token at every scored position, on the device."""
        return self._batch.sampled

    def result(self) -> VerifiedOutput:
        if self._result is None:
            out = self._batch.result()
            tokens, logprobs = out.sampled_token_ids, out.logprobs
            if self._synthetic is not None:
                self._result = self._synthetic_runs(self._synthetic, tokens)
                return self._result
            runs, run_logprobs = [], []
            for start, n in accepted_runs(tokens, self.drafts):
                runs.append(tokens[start:start + n])
                run_logprobs.append(_join(logprobs[start:start + n]))
            if self._rejections is not None:
                self._apply_rejections(tokens, runs, run_logprobs)
            self._result = VerifiedOutput(runs, run_logprobs)
        return self._result

    def _synthetic_runs(self, synthetic: SyntheticAcceptance, tokens: list[int]) -> VerifiedOutput:
        """Runs cut where the forced draws say (synthetic.py), not where the tokens disagree."""
        runs: list[list[int]] = []
        run_logprobs: list[LogprobsLists | None] = []
        start = 0
        for d, n, row in zip(self.drafts, synthetic.num_accepted(self.drafts), self._rows):
            run = [*d[:n], tokens[start + n]]
            runs.append(run)
            k = row.params.logprobs
            logits = self._logits[start: start + n + 1]
            run_logprobs.append(None if k is None else
                                compute_token_logprobs(logits, to_device(run, torch.int64, logits.device), k))
            start += len(d) + 1
        return VerifiedOutput(runs, run_logprobs)

    def _apply_rejections(self, tokens: list[int], runs: list[list[int]],
                          run_logprobs: list[LogprobsLists | None]) -> None:
        """Runs of drafts sampled from q: the rejection rule's, in place of the exact match's."""
        assert self._rejections is not None
        accepted_t, recovered_t = self._rejections.copy.wait()
        accepted, recovered = accepted_t.tolist(), recovered_t.tolist()
        starts = [0]
        for d in self.drafts:
            starts.append(starts[-1] + len(d) + 1)
        pos = 0
        for i in self._rejections.requests:
            d = self.drafts[i]
            n = 0
            while n < len(d) and accepted[pos + n]:
                n += 1
            end_token = recovered[pos + n] if n < len(d) else tokens[starts[i] + len(d)]
            runs[i] = [*d[:n], end_token]
            pos += len(d)
            k = self._rows[i].params.logprobs
            if k is not None:  # of the run's own tokens, which the plain samples' columns are not
                rows = self._logits[starts[i]: starts[i] + n + 1]
                run_logprobs[i] = compute_token_logprobs(rows, to_device(runs[i], torch.int64, rows.device), k)


def _join(rows: list[LogprobsLists | None]) -> LogprobsLists | None:
    if rows[0] is None:
        return None
    joined = LogprobsLists([], [], [])
    for r in rows:
        assert r is not None
        joined.extend(r)
    return joined


class DraftVerifier:
    """Scores drafted positions with the runner's sampler (its stage, generators and all)."""

    def __init__(self, sampler: Sampler, rejection: RejectionFn | None = None,
                 synthetic: SyntheticAcceptance | None = None) -> None:
        """`rejection`: the platform's kernel of the rejection rule (Platform.rejection_stage: the
        Triton one on CUDA); None: the torch reference. `synthetic`: forced acceptance instead of
        checking (benchmarks only; synthetic.py)."""
        self.sampler = sampler
        self.rejection: RejectionFn = rejection or rejection_sample
        self.synthetic = synthetic

    def launch(self, logits: torch.Tensor, rows: list[SamplingRequest], drafts: list[list[int]],
               draft_probs: list[torch.Tensor | None] | None = None) -> VerifiedBatch:
        """logits [sum(len(d) + 1), V]: request i's len(drafts[i]) + 1 positions, in order.
        draft_probs[i]: [>= len(drafts[i]), V] the distribution request i's drafts were sampled
        from, or None for drafts that are fixed tokens."""
        expanded = expand_rows(rows, drafts)
        metadata = make_sampling_metadata(expanded, logits.shape[-1], logits.device)
        batch = self.sampler.launch(logits, metadata)
        rejections = None
        if (self.synthetic is None and draft_probs is not None
                and any(q is not None and d for q, d in zip(draft_probs, drafts))):
            rejections = self._reject(logits, expanded, drafts, draft_probs)
        return VerifiedBatch(batch, drafts, rows, logits, rejections, self.synthetic)

    def _reject(self, logits: torch.Tensor, expanded: list[SamplingRequest], drafts: list[list[int]],
                draft_probs: list[torch.Tensor | None]) -> _Rejections:
        requests: list[int] = []
        positions: list[int] = []
        qs: list[torch.Tensor] = []
        ids: list[int] = []
        start = 0
        for i, (d, q) in enumerate(zip(drafts, draft_probs)):
            if q is not None and d:
                requests.append(i)
                positions.extend(range(start, start + len(d)))
                qs.append(q[:len(d)])
                ids.extend(d)
            start += len(d) + 1
        device = logits.device
        index = to_device(positions, torch.int64, device)
        sub_rows = [expanded[r] for r in positions]
        target = self.sampler.distribution(logits.index_select(0, index),
                                           make_sampling_metadata(sub_rows, logits.shape[-1], device))
        u = torch.empty((len(positions), 2), dtype=torch.float32, device=device)
        u.uniform_(generator=self.sampler.generator)
        for r, row in enumerate(sub_rows):
            if row.params.seed is not None:
                u[r].uniform_(generator=position_generator(row.params.seed, row.num_output_tokens, device,
                                                           ACCEPT_STREAM))
        accepted, recovered = self.rejection(target, torch.cat(qs), to_device(ids, torch.int64, device),
                                             u[:, 0], u[:, 1])
        return _Rejections(requests, HostCopy([accepted, recovered]))
