"""logit_bias, min_tokens masking and penalties change exactly the logits they should."""
from __future__ import annotations

import math

import torch

from pagedllm.sample.sampler import Sampler, process_logits

RAW = torch.tensor([2.0, -1.0, 0.5, -0.5, 3.0, 1.0])  # [V]
V = RAW.shape[0]


def _process(rows, make_metadata) -> torch.Tensor:
    return process_logits(RAW.expand(len(rows), V).clone(), make_metadata(rows, V))


def test_penalties_match_hand_computed(make_row, make_metadata):
    rows = [make_row(prompt=[0, 1], output=[2, 2, 3], repetition_penalty=2.0, frequency_penalty=0.5,
                     presence_penalty=0.25),
            make_row(prompt=[0, 1], output=[2, 2, 3])]  # no penalties: untouched
    out = _process(rows, make_metadata)
    # repetition on seen {0, 1, 2, 3}: 2/2, -1*2, 0.5/2, -0.5*2; then frequency (counts 2: 2, 3: 1)
    # and presence on output tokens {2, 3}; 4 and 5 unseen.
    expected = torch.tensor([1.0, -2.0, 0.25 - 2 * 0.5 - 0.25, -1.0 - 0.5 - 0.25, 3.0, 1.0])
    torch.testing.assert_close(out[0], expected)
    assert torch.equal(out[1], RAW)


def test_frequency_and_presence_only_look_at_output(make_row, make_metadata):
    out = _process([make_row(prompt=[4, 4, 5], output=[1], frequency_penalty=1.0, presence_penalty=-0.5)],
                   make_metadata)
    expected = RAW.clone()
    expected[1] += -1.0 + 0.5
    torch.testing.assert_close(out[0], expected)


def test_repetition_penalty_below_one_boosts(make_row, make_metadata):
    out = _process([make_row(prompt=[0, 0], output=[1, 0], repetition_penalty=0.5)], make_metadata)
    expected = RAW.clone()
    expected[0], expected[1] = 4.0, -0.5
    torch.testing.assert_close(out[0], expected)


def test_logit_bias(make_row, make_metadata):
    rows = [make_row(logit_bias={1: 5.0, 4: -2.0}), make_row(logit_bias={5: 0.5}), make_row()]
    out = _process(rows, make_metadata)
    expected = RAW.expand(3, V).clone()
    expected[0, 1] += 5.0
    expected[0, 4] -= 2.0
    expected[1, 5] += 0.5
    torch.testing.assert_close(out, expected)


def test_logit_bias_changes_greedy_choice(make_row, make_metadata):
    md = make_metadata([make_row(temperature=0.0, logit_bias={1: 10.0})], V)
    assert Sampler().forward(RAW.unsqueeze(0), md).sampled_token_ids == [1]


def test_min_tokens_masks_eos_and_stop_tokens(make_row, make_metadata):
    rows = [make_row(output=[0, 0], eos=4, min_tokens=3, stop_token_ids=[5]),  # masked: 4 and 5
            make_row(output=[0, 0, 0], eos=4, min_tokens=3, stop_token_ids=[5]),  # reached min_tokens
            make_row(output=[0], eos=4, min_tokens=3, stop_token_ids=[5], ignore_eos=True),  # only 5
            make_row(output=[0], eos=4, min_tokens=0)]  # no min_tokens
    out = _process(rows, make_metadata)
    expected = RAW.expand(4, V).clone()
    expected[0, 4] = expected[0, 5] = expected[2, 5] = -math.inf
    assert torch.equal(out, expected)


def test_min_tokens_prevents_greedy_eos(make_row, make_metadata):
    # eos (4) is the argmax, but may not be picked before min_tokens
    rows = [make_row(output=[], eos=4, min_tokens=2, temperature=0.0),
            make_row(output=[], eos=4, min_tokens=2, temperature=1.0)]
    for _ in range(20):
        assert 4 not in Sampler().forward(RAW.expand(2, V).clone(), make_metadata(rows, V)).sampled_token_ids


def test_penalty_rows_subset_in_larger_batch(make_row, make_metadata):
    rows = [make_row(), make_row(output=[4], presence_penalty=1.0), make_row(), make_row(output=[0, 0], frequency_penalty=2.0)]
    out = _process(rows, make_metadata)
    expected = RAW.expand(4, V).clone()
    expected[1, 4] -= 1.0
    expected[3, 0] -= 4.0
    torch.testing.assert_close(out, expected)


def test_no_processing_returns_input(make_row, make_metadata):
    logits = RAW.unsqueeze(0)
    assert process_logits(logits, make_metadata([make_row(temperature=0.3, top_k=3)], V)) is logits
