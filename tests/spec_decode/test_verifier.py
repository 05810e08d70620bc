"""The verifier: runs cut at the first disagreement, each position sampled exactly as a plain step
would sample it, and the target's distribution kept whatever the drafts (chi-square)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from pagedllm.sample.sampler import Sampler
from pagedllm.sample.sampling_metadata import SamplingRequest, make_sampling_metadata
from pagedllm.sampling_params import SamplingParams
from pagedllm.spec_decode.verifier import DraftVerifier, accepted_runs, expand_rows

CPU = torch.device("cpu")


def test_accepted_runs_cut_at_the_first_disagreement():
    tokens = [5, 6, 7, 1, 2, 9, 4]
    # request 0: drafts 5 6 -> rows 5 6 7: both accepted, 7 is the target's own
    # request 1: drafts 1 3 -> rows 1 2 9: 1 accepted, 2 replaces 3
    # request 2: no drafts -> row 4
    assert accepted_runs(tokens, [[5, 6], [1, 3], []]) == [(0, 3), (3, 2), (6, 1)]
    assert accepted_runs([8, 0], [[7]]) == [(0, 1)]


def test_expanded_rows_see_the_drafts_as_generated():
    plain = SamplingRequest(SamplingParams(seed=3), [1], [4, 4], None)
    penalised = SamplingRequest(SamplingParams(frequency_penalty=0.5), [1], [4], None)
    rows = expand_rows([plain, penalised], [[7, 8], [9]])
    assert [r.num_output_tokens for r in rows] == [2, 3, 4, 1, 2]
    assert [r.output_token_ids for r in rows[3:]] == [[4], [4, 9]]  # penalties read the tokens themselves
    assert rows[1].output_token_ids is plain.output_token_ids  # the others only count them


PARAMS = [
    SamplingParams(temperature=0.0),
    SamplingParams(temperature=0.8, top_p=0.9, seed=11),
    SamplingParams(temperature=1.0, top_k=5, min_p=0.05, seed=12),
    SamplingParams(temperature=0.7, seed=13, repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.2),
    SamplingParams(temperature=1.0, seed=14, min_tokens=4, logit_bias={3: 2.0}),
]


@pytest.mark.parametrize("params", PARAMS, ids=range(len(PARAMS)))
def test_each_position_is_what_a_plain_step_samples(params):
    torch.manual_seed(0)
    vocab, eos, outputs = 32, 2, [5, 6]
    logits = torch.randn(4, vocab) * 3  # request's 3 drafts + 1
    logits[:, eos] += 4.0  # EOS likely: min_tokens must mask it where it applies
    sampler = Sampler(generator=torch.Generator().manual_seed(1))
    plain: list[int] = []
    for j in range(4):  # a step-by-step decode: position j after the tokens before it
        row = SamplingRequest(params, [1, 2], outputs + plain, eos)
        md = make_sampling_metadata([row], vocab, CPU)
        plain.append(sampler.forward(logits[j:j + 1].contiguous(), md).sampled_token_ids[0])
    verifier = DraftVerifier(sampler)
    request = SamplingRequest(params, [1, 2], list(outputs), eos)
    # Seeded or greedy, so the same noise: drafts equal to the plain tokens are all accepted.
    run = verifier.launch(logits, [request], [plain[:3]]).result().token_runs[0]
    assert run == plain
    wrong = [plain[0], (plain[1] + 1) % vocab, plain[2]]
    assert verifier.launch(logits, [request], [wrong]).result().token_runs[0] == plain[:2]


def test_logprobs_cover_the_run():
    vocab = 16
    logits = torch.randn(3, vocab)
    target = logits.argmax(-1).tolist()
    request = SamplingRequest(SamplingParams(temperature=0.0, logprobs=2), [1], [], None)
    out = DraftVerifier(Sampler()).launch(logits, [request], [[target[0], (target[1] + 1) % vocab]]).result()
    assert out.token_runs == [target[:2]]
    lists = out.logprobs[0]
    assert lists is not None and len(lists) == 2
    expected = torch.log_softmax(logits, -1)
    for i in range(2):
        assert lists.token_ids[i][0] == target[i]
        assert lists.logprobs[i][0] == pytest.approx(float(expected[i, target[i]]), abs=1e-5)


def test_distribution_is_the_targets_whatever_the_drafts():
    """A draft that the target rarely picks: the first token still follows p0, and after an
    accepted draft the second follows p1 (chi-square, p > 0.001)."""
    vocab, n = 6, 20000
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -0.5, -1.0], [0.0, 1.5, -1.0, 0.5, 0.2, 1.0]])
    p0, p1 = torch.softmax(logits.double(), -1).numpy()
    draft = [4]  # p0[4] is small: mostly rejected
    rows = [SamplingRequest(SamplingParams(temperature=1.0), [0], [], None)] * n
    out = DraftVerifier(Sampler(generator=torch.Generator().manual_seed(5))).launch(
        logits.repeat(n, 1), rows, [draft] * n).result()
    first = np.array([r[0] for r in out.token_runs])
    _check(np.bincount(first, minlength=vocab), p0)
    second = np.array([r[1] for r in out.token_runs if r[0] == draft[0]])
    assert len(second) > 500
    _check(np.bincount(second, minlength=vocab), p1)
    assert all(len(r) == 1 for r in out.token_runs if r[0] != draft[0])


def _check(counts: np.ndarray, probs: np.ndarray) -> None:
    p_value = chisquare(counts, probs / probs.sum() * counts.sum()).pvalue
    assert p_value > 1e-3, (counts, probs, p_value)


def test_drafts_sampled_from_q_keep_the_targets_distribution():
    """The rejection rule for drafts drawn from a draft distribution q far from p: the first token
    follows p0, and after an accepted draft the next follows p1 (chi-square, p > 0.001)."""
    vocab, n = 6, 20000
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -0.5, -1.0], [0.0, 1.5, -1.0, 0.5, 0.2, 1.0]])
    p0, p1 = torch.softmax(logits.double(), -1).numpy()
    q = torch.tensor([0.05, 0.05, 0.1, 0.2, 0.3, 0.3])  # favours what p0 does not
    drafts = torch.multinomial(q, n, replacement=True, generator=torch.Generator().manual_seed(3)).tolist()
    rows = [SamplingRequest(SamplingParams(temperature=1.0), [0], [], None)] * n
    out = DraftVerifier(Sampler(generator=torch.Generator().manual_seed(4))).launch(
        logits.repeat(n, 1), rows, [[d] for d in drafts], [q.unsqueeze(0)] * n).result()
    first = np.array([r[0] for r in out.token_runs])
    _check(np.bincount(first, minlength=vocab), p0)
    accepted = [r for r, d in zip(out.token_runs, drafts) if len(r) == 2]
    assert all(r[0] == d for r, d in zip(out.token_runs, drafts) if len(r) == 2)
    # acceptance rate: sum over x of min(p0(x), q(x))
    expected_rate = float(np.minimum(p0, q.double().numpy()).sum())
    assert abs(len(accepted) / n - expected_rate) < 0.02
    _check(np.bincount([r[1] for r in accepted], minlength=vocab), p1)


def test_sampled_drafts_seeded_requests_reproduce_in_any_batch():
    vocab = 16
    torch.manual_seed(0)
    logits = torch.randn(3, vocab)
    q = torch.softmax(torch.randn(2, vocab), -1)
    request = SamplingRequest(SamplingParams(temperature=1.0, seed=7, logprobs=1), [1], [4], None)
    other = SamplingRequest(SamplingParams(temperature=1.0), [1], [], None)
    verifier = DraftVerifier(Sampler())
    alone = verifier.launch(logits, [request], [[3, 5]], [q]).result()
    batched = verifier.launch(torch.cat([torch.randn(2, vocab), logits]), [other, request], [[2], [3, 5]],
                              [q[:1], q]).result()
    assert batched.token_runs[1] == alone.token_runs[0]
    lists = alone.logprobs[0]
    assert lists is not None and len(lists) == len(alone.token_runs[0])
    assert [row[0] for row in lists.token_ids] == alone.token_runs[0]


@pytest.mark.parametrize("rates, expected", [([1.0, 1.0, 1.0], 3), ([0.0, 0.0, 0.0], 0), ([1.0, 0.0, 0.0], 1)])
def test_synthetic_acceptance_cuts_where_forced(rates, expected):
    from pagedllm.spec_decode.synthetic import SyntheticAcceptance

    vocab = 16
    logits = torch.randn(4, vocab)
    target = logits.argmax(-1).tolist()
    drafts = [(t + 1) % vocab for t in target[:3]]  # all wrong: only the forced draws accept them
    request = SamplingRequest(SamplingParams(temperature=0.0, logprobs=1), [1], [], None)
    out = DraftVerifier(Sampler(), synthetic=SyntheticAcceptance(rates)).launch(logits, [request], [drafts]).result()
    assert out.token_runs == [[*drafts[:expected], target[expected]]]
    lists = out.logprobs[0]
    assert lists is not None and [row[0] for row in lists.token_ids] == out.token_runs[0]


def test_synthetic_acceptance_rates_are_what_was_asked():
    from pagedllm.spec_decode.synthetic import SyntheticAcceptance

    counts = np.array(SyntheticAcceptance([0.7] * 4, seed=3).num_accepted([[1, 2, 3, 4]] * 20000))
    for j in range(1, 5):  # draft j accepted with probability 0.7 ** j
        assert (counts >= j).mean() == pytest.approx(0.7 ** j, abs=0.015)
