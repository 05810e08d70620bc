"""Flags and tensors of SamplingMetadata: unused features are None so the sampler skips them."""
from __future__ import annotations

import torch

from pagedllm.sample.topk_topp import apply_top_p

V = 100


def test_default_rows_need_nothing(make_row, make_metadata):
    md = make_metadata([make_row(), make_row()], V)
    assert md.all_random and not md.all_greedy
    assert md.top_k is None and md.top_p_rows is None and md.min_p is None
    assert md.logit_bias is None and md.min_tokens_mask is None and md.penalties is None
    assert md.max_num_logprobs is None and md.generators == {} and md.greedy_mask is None


def test_fields_for_mixed_rows(make_row, make_metadata):
    rows = [make_row(temperature=0.0, top_p=0.5, seed=1),  # greedy: its top_p/seed are irrelevant
            make_row(temperature=0.5, top_k=7, top_p=0.9, seed=3, output=[1, 2]),
            make_row(min_p=0.1, logprobs=2),
            make_row(top_k=V + 5)]  # top_k beyond the vocab: no top-k
    md = make_metadata(rows, V)
    assert md.greedy_mask.tolist() == [True, False, False, False]
    torch.testing.assert_close(md.temperature, torch.tensor([1.0, 0.5, 1.0, 1.0]))
    assert md.top_k.tolist() == [0, 7, 0, 0] and md.max_top_k == 7
    assert md.top_p_rows.tolist() == [1] and md.top_p_max_top_k == 7
    assert md.min_p.tolist()[2] > 0 and md.min_p.tolist()[0] == 0
    assert list(md.generators) == [1]
    assert md.num_logprobs == [None, None, 2, None] and md.max_num_logprobs == 2


def test_penalty_tokens_only_for_penalised_rows(make_row, make_metadata):
    rows = [make_row(output=[7]), make_row(prompt=[9, 9], output=[1, 2, 2], frequency_penalty=0.5), make_row(),
            make_row(prompt=[3], output=[4], repetition_penalty=1.5)]
    pm = make_metadata(rows, V).penalties
    assert pm.output_tokens.rows.tolist() == [1, 1, 1, 3] and pm.output_tokens.token_ids.tolist() == [1, 2, 2, 4]
    # prompts are only needed for the repetition penalty
    assert pm.prompt_tokens.rows.tolist() == [3] and pm.prompt_tokens.token_ids.tolist() == [3]
    assert pm.frequency.tolist() == [0.0, 0.5, 0.0, 0.0] and pm.repetition.tolist() == [1.0, 1.0, 1.0, 1.5]


def test_top_p_partial_sort_equals_full_sort():
    torch.manual_seed(0)
    logits = torch.randn(6, V) * 3
    k = 20
    top_values = logits.topk(k, dim=-1).values[:, -1:]
    logits = logits.masked_fill(logits < top_values, float("-inf"))  # top-k ran before
    rows = torch.tensor([0, 2, 3, 5])
    top_p = torch.tensor([0.3, 0.6, 0.9, 0.99])
    a, b = logits.clone(), logits.clone()
    apply_top_p(a, rows, top_p, max_top_k=k)
    apply_top_p(b, rows, top_p, max_top_k=None)
    assert torch.equal(a, b)
    assert torch.equal(a[[1, 4]], logits[[1, 4]])  # rows without top-p untouched


def test_top_p_partial_sort_with_fallback_matches_naive():
    # V > 256: peaked rows resolve within the first 256 sorted tokens, flat rows fall back to a full sort
    torch.manual_seed(1)
    vocab = 2000
    logits = torch.randn(4, vocab)
    logits[0] *= 8.0
    logits[2] *= 8.0
    top_p = torch.tensor([0.9, 0.9, 0.5, 0.99])
    out = logits.clone()
    apply_top_p(out, torch.arange(4), top_p, max_top_k=None)
    for i in range(4):
        probs = logits[i].double().softmax(-1)
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs
        kept = set(order[before < top_p[i].item()].tolist())
        assert set(torch.isfinite(out[i]).nonzero().squeeze(1).tolist()) == kept
    assert len(set(torch.isfinite(out[0]).nonzero().squeeze(1).tolist())) < 256
    assert len(set(torch.isfinite(out[1]).nonzero().squeeze(1).tolist())) > 256
