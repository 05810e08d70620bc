"""The empirical distribution of samples matches the (truncated) softmax: chi-square, p > 0.001."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare


LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])  # [V]
V = LOGITS.shape[0]
NUM_SAMPLES = 20000


def _sample_counts(make_row, make_metadata, make_sampler, seeded: bool = False, **params: object) -> np.ndarray:
    rows = [make_row(seed=i if seeded else None, **params) for i in range(NUM_SAMPLES)]
    sampler = make_sampler(generator=torch.Generator().manual_seed(1234))
    tokens = sampler.forward(LOGITS.expand(NUM_SAMPLES, V).contiguous(), make_metadata(rows, V)).sampled_token_ids
    return np.bincount(tokens, minlength=V)


def _check(counts: np.ndarray, probs: np.ndarray) -> None:
    support = probs > 0
    assert counts[~support].sum() == 0, f"sampled a truncated token: {counts}"
    expected = probs[support] / probs[support].sum() * counts.sum()
    p_value = chisquare(counts[support], expected).pvalue if support.sum() > 1 else 1.0
    assert p_value > 1e-3, (counts, expected, p_value)


def _softmax(x: torch.Tensor) -> np.ndarray:
    return torch.softmax(x.double(), -1).numpy()


def _truncate(probs: np.ndarray, keep: np.ndarray) -> np.ndarray:
    out = np.where(keep, probs, 0.0)
    return out / out.sum()


@pytest.mark.parametrize("seeded", [False, True])
def test_temperature_1_matches_softmax(make_row, make_metadata, make_sampler, seeded):
    _check(_sample_counts(make_row, make_metadata, make_sampler, seeded=seeded), _softmax(LOGITS))


def test_temperature_scales(make_row, make_metadata, make_sampler):
    _check(_sample_counts(make_row, make_metadata, make_sampler, temperature=0.5), _softmax(LOGITS / 0.5))
    _check(_sample_counts(make_row, make_metadata, make_sampler, temperature=2.0), _softmax(LOGITS / 2.0))


def test_top_k(make_row, make_metadata, make_sampler):
    probs = _softmax(LOGITS)
    _check(_sample_counts(make_row, make_metadata, make_sampler, top_k=3), _truncate(probs, np.arange(V) < 3))


def test_top_p(make_row, make_metadata, make_sampler):
    probs = _softmax(LOGITS)  # sorted descending already
    # keep the smallest prefix whose mass reaches top_p: a token stays if those before it sum < top_p
    top_p = 0.7
    keep = np.concatenate([[0.0], np.cumsum(probs)[:-1]]) < top_p
    assert 1 < keep.sum() < V
    _check(_sample_counts(make_row, make_metadata, make_sampler, top_p=top_p), _truncate(probs, keep))


def test_min_p(make_row, make_metadata, make_sampler):
    probs = _softmax(LOGITS / 0.8)
    min_p = 0.2
    keep = probs >= min_p * probs.max()
    assert 1 < keep.sum() < V
    _check(_sample_counts(make_row, make_metadata, make_sampler, temperature=0.8, min_p=min_p), _truncate(probs, keep))


def test_top_k_top_p_min_p_together(make_row, make_metadata, make_sampler):
    # order: top-k, then top-p on the renormalised rest, then min-p
    probs = _softmax(LOGITS)
    after_k = _truncate(probs, np.arange(V) < 5)
    after_p = _truncate(after_k, np.concatenate([[0.0], np.cumsum(after_k)[:-1]]) < 0.9)
    after_min_p = _truncate(after_p, after_p >= 0.3 * after_p.max())
    assert (after_min_p > 0).sum() >= 2
    _check(_sample_counts(make_row, make_metadata, make_sampler, top_k=5, top_p=0.9, min_p=0.3), after_min_p)
