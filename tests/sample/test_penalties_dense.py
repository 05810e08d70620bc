"""The dense penalty path (used on GPUs, where `unique` would sync) equals the sparse CPU path."""
from __future__ import annotations

import torch

from pagedllm.sample.penalties import _apply_penalties_dense, apply_penalties


def test_dense_equals_sparse(make_row, make_metadata):
    gen = torch.Generator().manual_seed(0)
    rows = [
        make_row(prompt=[1, 2, 3, 3], output=[4, 4, 5], repetition_penalty=1.3, frequency_penalty=0.5,
                 presence_penalty=0.2),
        make_row(prompt=[7], output=[], temperature=0.0),
        make_row(prompt=[8, 9], output=[9, 9, 9, 10], frequency_penalty=-0.4),
        make_row(prompt=[11, 12], output=[12, 13], repetition_penalty=0.7),
    ]
    md = make_metadata(rows, 32)
    assert md.penalties is not None and md.penalties.prompt_tokens is not None
    logits = torch.randn(4, 32, generator=gen)
    sparse, dense = logits.clone(), logits.clone()
    apply_penalties(sparse, md.penalties)
    _apply_penalties_dense(dense, md.penalties)
    torch.testing.assert_close(dense, sparse, rtol=1e-6, atol=1e-6)
    assert not torch.equal(dense, logits)


def test_dense_without_repetition_penalty(make_row, make_metadata):
    rows = [make_row(output=[3, 3, 1], frequency_penalty=1.0), make_row(output=[2], presence_penalty=0.5)]
    md = make_metadata(rows, 8)
    assert md.penalties is not None and md.penalties.prompt_tokens is None
    logits = torch.zeros(2, 8)
    _apply_penalties_dense(logits, md.penalties)
    expected = torch.zeros(2, 8)
    expected[0, 3], expected[0, 1], expected[1, 2] = -2.0, -1.0, -0.5
    torch.testing.assert_close(logits, expected)
