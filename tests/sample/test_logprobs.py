"""Logprobs: column 0 is the sampled (or next prompt) token, values are log_softmax of RAW logits."""
from __future__ import annotations

import torch

from pagedllm.sample.sampler import Sampler, compute_prompt_logprobs

V = 64


def _rank(logprobs: torch.Tensor, token: int) -> int:
    return int((logprobs > logprobs[token]).sum()) + 1


def test_sample_logprobs_use_raw_logits(make_row, make_metadata):
    torch.manual_seed(0)
    logits = torch.randn(5, V) * 2
    rows = [make_row(logprobs=3, temperature=0.0, repetition_penalty=1.8, output=[1, 2], logit_bias={7: 4.0}),
            make_row(),  # no logprobs
            make_row(logprobs=0, temperature=0.7, top_k=10),
            make_row(logprobs=5, temperature=1.3, top_p=0.8, frequency_penalty=1.0, output=[3, 3]),
            make_row(logprobs=1, seed=3)]
    out = Sampler().forward(logits, make_metadata(rows, V))
    raw = logits.log_softmax(-1)
    assert out.logprobs[1] is None
    for i, k in ((0, 3), (2, 0), (3, 5), (4, 1)):
        lp = out.logprobs[i]
        assert lp is not None and len(lp) == 1
        tok = out.sampled_token_ids[i]
        ids, values = lp.token_ids[0], lp.logprobs[0]
        assert len(ids) == len(values) == 1 + k
        assert ids[0] == tok
        assert lp.ranks[0] == _rank(raw[i], tok)
        top = raw[i].topk(k)
        assert ids[1:] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor(values), raw[i, ids])


def test_greedy_logprob_rank_is_one(make_row, make_metadata):
    logits = torch.randn(3, V)
    out = Sampler().forward(logits, make_metadata([make_row(temperature=0, logprobs=2)] * 3, V))
    for i in range(3):
        lp = out.logprobs[i]
        assert lp.ranks == [1] and lp.token_ids[0][0] == lp.token_ids[0][1] == int(logits[i].argmax())


def test_prompt_logprobs():
    torch.manual_seed(1)
    logits = torch.randn(7, V)
    targets = [5, 0, 63, 12, 12, 40, 1]
    lp = compute_prompt_logprobs(logits, targets, 4)
    raw = logits.log_softmax(-1)
    assert len(lp) == 7
    for p, t in enumerate(targets):
        assert lp.token_ids[p][0] == t
        assert lp.token_ids[p][1:] == raw[p].topk(4).indices.tolist()
        assert lp.ranks[p] == _rank(raw[p], t)
        torch.testing.assert_close(torch.tensor(lp.logprobs[p]), raw[p, lp.token_ids[p]])


def test_prompt_logprobs_chunked_and_zero_k():
    logits = torch.randn(1300, 10)  # more than one chunk
    targets = torch.randint(0, 10, (1300,)).tolist()
    lp = compute_prompt_logprobs(logits, targets, 0)
    assert len(lp) == 1300 and all(len(row) == 1 for row in lp.token_ids)
    assert [row[0] for row in lp.token_ids] == targets
    expected = logits.log_softmax(-1).gather(1, torch.tensor(targets).unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(torch.tensor([row[0] for row in lp.logprobs]), expected)
