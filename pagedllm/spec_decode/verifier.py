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

For drafts that are fixed tokens (n-gram, suffix: no draft distribution q), this is the standard
rejection rule exactly: d is accepted with probability p(d) = min(1, p(d)/q(d)) for q = one-hot(d),
and when it is not, the token comes from p restricted to tokens other than d, which is
norm(max(0, p - q)). The run is then the very sequence a step-by-step decode would produce with
the same noise, so greedy output is unchanged and seeded output too (float numerics aside).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pagedllm.outputs import LogprobsLists
from pagedllm.sample.sampler import SampledBatch, Sampler
from pagedllm.sample.sampling_metadata import SamplingRequest, has_penalty, make_sampling_metadata


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


class VerifiedBatch:
    """A verifying step's tokens as queued on the device; `result()` reads them and cuts the runs."""

    def __init__(self, batch: SampledBatch, drafts: list[list[int]]) -> None:
        self._batch = batch
        self.drafts = drafts  # [num_reqs] the drafts checked
        self._result: VerifiedOutput | None = None

    @property
    def sampled(self) -> torch.Tensor:
        """[rows] the target's token at every scored position, on the device."""
        return self._batch.sampled

    def result(self) -> VerifiedOutput:
        if self._result is None:
            out = self._batch.result()
            tokens, logprobs = out.sampled_token_ids, out.logprobs
            runs, run_logprobs = [], []
            for start, n in accepted_runs(tokens, self.drafts):
                runs.append(tokens[start:start + n])
                run_logprobs.append(_join(logprobs[start:start + n]))
            self._result = VerifiedOutput(runs, run_logprobs)
        return self._result


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

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def launch(self, logits: torch.Tensor, rows: list[SamplingRequest], drafts: list[list[int]]) -> VerifiedBatch:
        """logits [sum(len(d) + 1), V]: request i's len(drafts[i]) + 1 positions, in order."""
        expanded = expand_rows(rows, drafts)
        metadata = make_sampling_metadata(expanded, logits.shape[-1], logits.device)
        return VerifiedBatch(self.sampler.launch(logits, metadata), drafts)
