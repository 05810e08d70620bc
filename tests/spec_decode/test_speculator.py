"""The speculator's backoff: drafts rejected whole make a request wait, longer each time in a row;
an accepted draft token ends the wait."""
from __future__ import annotations

import numpy as np

from pagedllm.sample.sampler import Sampler
from pagedllm.sampling_params import SamplingParams
from pagedllm.spec_decode.config import SpeculativeConfig
from pagedllm.spec_decode.speculator import Speculator


def _speculator() -> Speculator:
    return Speculator(SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 2,
                                                   "prompt_lookup_min": 1, "prompt_lookup_max": 2}), Sampler())


P = SamplingParams()
SEQ = np.array([1, 2, 3, 1, 2], dtype=np.int64)  # always proposes [3, 1]


def _drafted_steps(spec: Speculator, steps: int, accept_at: set[int] = frozenset()) -> list[int]:
    drafted = []
    for step in range(steps):
        drafts = spec.propose(["r"], [SEQ], [1], [0], [P])
        if "r" in drafts:
            drafted.append(step)
            run = [3, 1, 9] if step in accept_at else [8]
            spec.observe(["r"], [drafts["r"]], [run[:len(drafts["r"]) + 1]])
    return drafted


def test_whole_rejections_back_off_exponentially():
    assert _drafted_steps(_speculator(), 40) == [0, 1, 3, 7, 15, 31]


def test_an_accepted_token_ends_the_backoff():
    assert _drafted_steps(_speculator(), 12, accept_at={3}) == [0, 1, 3, 4, 5, 7, 11]


def test_finished_requests_are_forgotten():
    spec = _speculator()
    _drafted_steps(spec, 4)
    spec.finish_requests(["r"])
    assert "r" in spec.propose(["r"], [SEQ], [1], [0], [P])


def test_draft_length_follows_the_last_outcome():
    spec = Speculator(SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 4,
                                                   "prompt_lookup_min": 1, "prompt_lookup_max": 1}), Sampler())
    seq = np.array([5, 1, 2, 3, 4, 6, 5], dtype=np.int64)  # always proposes [1, 2, 3, 4]

    def step(run: list[int]) -> list[int]:
        drafts = spec.propose(["r"], [seq], [1], [0], [P])["r"]
        spec.observe(["r"], [drafts], [run])
        return drafts

    assert step([1, 2, 9]) == [1, 2, 3, 4]  # two accepted: the next may be three long
    assert step([1, 2, 3, 4]) == [1, 2, 3]  # all three accepted: back to four
    assert step([7]) == [1, 2, 3, 4]  # rejected whole: a one-token probe, at once the first time
    assert step([1, 8]) == [1]
    assert spec.propose(["r"], [seq], [1], [0], [P])["r"] == [1, 2, 3, 4]


def test_no_gate_under_forced_acceptance():
    spec = Speculator(SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 2,
                                                   "prompt_lookup_min": 1, "prompt_lookup_max": 2,
                                                   "rejection_sample_method": "synthetic",
                                                   "synthetic_acceptance_rates": [0.5, 0.25]}), Sampler())
    assert _drafted_steps(spec, 10) == list(range(10))  # whole rejections make no request wait


def test_strict_checks_sampled_drafts_by_exact_match(monkeypatch):
    import torch

    config = {"method": "ngram", "num_speculative_tokens": 2}
    seen = []
    for method in ("probabilistic", "strict"):
        spec = Speculator(SpeculativeConfig.from_user({**config, "rejection_sample_method": method}), Sampler())
        monkeypatch.setattr(spec.proposer, "draft_probs", lambda req_id: torch.ones(2, 8) / 8)
        monkeypatch.setattr(spec.verifier, "launch", lambda logits, rows, drafts, probs: seen.append(probs))
        spec.verify(torch.zeros(3, 8), [], [[1, 2]], ["r"])
    assert seen[0] is not None and seen[0][0] is not None
    assert seen[1] is None
