from __future__ import annotations

import torch

from pagedllm.sample.sampler import Sampler


def test_all_greedy_is_argmax(make_row, make_metadata):
    logits = torch.randn(8, 300)
    md = make_metadata([make_row(temperature=0.0) for _ in range(8)], 300)
    assert md.all_greedy and not md.needs_logit_processing and md.temperature is None
    out = Sampler().forward(logits, md)
    assert out.sampled_token_ids == logits.argmax(-1).tolist()
    assert out.logprobs == [None] * 8


def test_top_k_1_equals_greedy_even_with_other_params(make_row, make_metadata):
    torch.manual_seed(0)
    logits = torch.randn(16, 500) * 3
    rows = [make_row(temperature=1.5, top_k=1, top_p=0.9, min_p=0.05) for _ in range(16)]
    out = Sampler().forward(logits, make_metadata(rows, 500))
    assert out.sampled_token_ids == logits.argmax(-1).tolist()


def test_top_k_1_with_ties_picks_the_argmax(make_row, make_metadata):
    logits = torch.zeros(4, 10)
    logits[:, 3] = logits[:, 7] = 5.0  # a tie: argmax takes the first
    out = Sampler().forward(logits, make_metadata([make_row(top_k=1)] * 4, 10))
    assert out.sampled_token_ids == [3, 3, 3, 3]


def test_mixed_batch_greedy_rows_take_argmax(make_row, make_metadata):
    torch.manual_seed(1)
    logits = torch.randn(6, 1000)  # flat enough that random rows rarely hit the argmax
    rows = [make_row(temperature=0.0 if i % 2 == 0 else 1.0) for i in range(6)]
    md = make_metadata(rows, 1000)
    assert not md.all_greedy and not md.all_random
    argmax = logits.argmax(-1).tolist()
    for _ in range(5):
        out = Sampler().forward(logits, md).sampled_token_ids
        assert [out[i] for i in (0, 2, 4)] == [argmax[i] for i in (0, 2, 4)]


def test_forward_does_not_modify_logits(make_row, make_metadata):
    logits = torch.randn(3, 50)
    before = logits.clone()
    rows = [make_row(temperature=0.7, top_k=5, top_p=0.8, min_p=0.1, repetition_penalty=1.3,
                     frequency_penalty=0.5, logit_bias={1: 3.0}, min_tokens=2, output=[4], eos=2,
                     logprobs=2)] * 3
    Sampler().forward(logits, make_metadata(rows, 50))
    assert torch.equal(logits, before)


def test_sampled_tokens_are_python_ints(make_row, make_metadata):
    out = Sampler().forward(torch.randn(2, 20), make_metadata([make_row(), make_row(temperature=0)], 20))
    assert all(type(t) is int for t in out.sampled_token_ids)


def test_greedy_tokens_take_the_first_of_tied_maxima():
    import torch

    from pagedllm.sample.sampler import greedy_tokens

    logits = torch.randn(6, 1000)
    logits[1, [7, 300, 999]] = 50.0
    logits[2, :] = 0.0
    logits[3, [0, 5]] = float("inf")
    assert torch.equal(greedy_tokens(logits), logits.argmax(dim=-1))
    assert greedy_tokens(logits)[1:4].tolist() == [7, 0, 0]
