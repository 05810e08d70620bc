"""Seeded rows depend only on (seed, output index), never on the batch around them."""
from __future__ import annotations

import pytest
import torch

from pagedllm.sample.seeding import position_seed

V = 2000


def _generate(make_row, make_metadata, make_sampler, seed_logits, seed: int, position: int, num_other: int,
              num_steps: int, step_offset: int = 0) -> list[int]:
    """Generate `num_steps` tokens for a seeded request placed at row `position` among
    `num_other` unseeded/greedy neighbours whose logits are random."""
    sampler = make_sampler()
    output: list[int] = list(range(step_offset))
    tokens = []
    for step in range(num_steps):
        rows, logits = [], []
        for i in range(num_other + 1):
            if i == position:
                rows.append(make_row(prompt=[1, 2, 3], output=output, seed=seed, temperature=0.9, top_p=0.95))
                logits.append(seed_logits[step_offset + step])
            else:
                rows.append(make_row(temperature=0.0 if i % 3 == 0 else 1.0, top_k=i % 5, seed=None))
                logits.append(torch.randn(V))
        out = sampler.forward(torch.stack(logits), make_metadata(rows, V)).sampled_token_ids
        tokens.append(out[position])
        output = output + [out[position]]
    return tokens


def test_seeded_reproduces_across_batches_and_positions(make_row, make_metadata, make_sampler):
    torch.manual_seed(0)
    seed_logits = torch.randn(12, V)
    alone = _generate(make_row, make_metadata, make_sampler, seed_logits, seed=42, position=0, num_other=0, num_steps=12)
    crowded = _generate(make_row, make_metadata, make_sampler, seed_logits, seed=42, position=5, num_other=9, num_steps=12)
    last = _generate(make_row, make_metadata, make_sampler, seed_logits, seed=42, position=3, num_other=3, num_steps=12)
    assert alone == crowded == last
    other_seed = _generate(make_row, make_metadata, make_sampler, seed_logits, seed=43, position=0, num_other=0, num_steps=12)
    assert other_seed != alone


def test_seeded_resumes_after_recompute(make_row, make_metadata, make_sampler):
    # After preemption the request is recomputed and continues at output index k: same tokens.
    torch.manual_seed(1)
    seed_logits = torch.randn(10, V)
    full = _generate(make_row, make_metadata, make_sampler, seed_logits, seed=7, position=0, num_other=2, num_steps=10)
    resumed = _generate(make_row, make_metadata, make_sampler, seed_logits, seed=7, position=1, num_other=4, num_steps=6,
                        step_offset=4)
    assert resumed == full[4:]


def test_unseeded_rows_differ(make_row, make_metadata, make_sampler):
    logits = torch.zeros(1, V)  # uniform: two runs of 20 tokens coincide with probability ~V**-20
    sampler = make_sampler()
    md = make_metadata([make_row()], V)
    a = [sampler.forward(logits, md).sampled_token_ids[0] for _ in range(20)]
    b = [sampler.forward(logits, md).sampled_token_ids[0] for _ in range(20)]
    assert a != b
    # and identical unseeded rows in one batch differ too
    out = sampler.forward(torch.zeros(20, V), make_metadata([make_row()] * 20, V)).sampled_token_ids
    assert len(set(out)) > 1


def test_same_seed_different_positions_differ(make_row, make_metadata, make_sampler):
    # Output index k is part of the seed: a seeded request does not repeat one token forever.
    logits = torch.zeros(1, V)
    tokens = [make_sampler().forward(logits, make_metadata([make_row(output=[0] * k, seed=5)], V)).sampled_token_ids[0]
              for k in range(10)]
    assert len(set(tokens)) > 1


def test_position_seed_is_stable_and_64_bit():
    assert position_seed(42, 3) == position_seed(42, 3)
    assert position_seed(42, 3) != position_seed(42, 4) != position_seed(43, 3)
    for s in (0, -1, 2**70, -(2**63)):
        assert 0 <= position_seed(s, 0) < 2**64
