"""The offline API's behaviour on the real model: sampling, n, stop, logprobs, errors."""
from __future__ import annotations

import math
import random

import pytest

from pagedllm import SamplingParams

PROMPTS = ["The capital of France is", "My favourite food is", "In the year 2050,", "Dogs are"]


def _texts(outs):
    return [o.outputs[0].text for o in outs]


def test_top_k_1_equals_greedy(smollm2_llm):
    greedy = smollm2_llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)
    top1 = smollm2_llm.generate(PROMPTS, SamplingParams(temperature=1.0, top_k=1, max_tokens=16), use_tqdm=False)
    assert [o.outputs[0].token_ids for o in greedy] == [o.outputs[0].token_ids for o in top1]


def test_seed_reproduces_across_batch_compositions(smollm2_llm):
    seeded = SamplingParams(temperature=1.0, seed=1234, max_tokens=24)
    alone = smollm2_llm.generate(PROMPTS[0], seeded, use_tqdm=False)[0].outputs[0].token_ids
    others = SamplingParams(temperature=1.0, max_tokens=30)
    mixed = smollm2_llm.generate(PROMPTS[1:] + PROMPTS[:1], [others] * 3 + [seeded], use_tqdm=False)
    assert mixed[-1].outputs[0].token_ids == alone
    unseeded = [smollm2_llm.generate(PROMPTS[0], SamplingParams(temperature=1.0, max_tokens=24),
                                     use_tqdm=False)[0].outputs[0].token_ids for _ in range(3)]
    assert len({tuple(u) for u in unseeded}) > 1


def test_n_sequences(smollm2_llm):
    out = smollm2_llm.generate(PROMPTS[0], SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=12),
                               use_tqdm=False)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    again = smollm2_llm.generate(PROMPTS[0], SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=12),
                                 use_tqdm=False)[0]
    assert [c.token_ids for c in again.outputs] == [c.token_ids for c in out.outputs]


def test_stop_string_never_emitted(smollm2_llm):
    base = smollm2_llm.generate("Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=20), use_tqdm=False)[0]
    text = base.outputs[0].text
    assert "6" in text, text
    out = smollm2_llm.generate("Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=20, stop=["6"]),
                               use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == "6"
    assert out.text == text[: text.index("6")]
    incl = smollm2_llm.generate("Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=20, stop=["6"],
                                include_stop_str_in_output=True), use_tqdm=False)[0].outputs[0]
    assert incl.text == text[: text.index("6") + 1]


def test_max_tokens_and_finish_reason(smollm2_llm):
    out = smollm2_llm.generate(PROMPTS[1], SamplingParams(max_tokens=5, ignore_eos=True), use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 5 and out.outputs[0].finish_reason == "length"


def test_logprobs(smollm2_llm):
    out = smollm2_llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=6, logprobs=3),
                               use_tqdm=False)[0].outputs[0]
    assert len(out.logprobs) == 6
    total = 0.0
    for token, entry in zip(out.token_ids, out.logprobs):
        assert token in entry and entry[token].rank == 1  # greedy picks the top token
        assert 3 <= len(entry) <= 4
        total += entry[token].logprob
    assert math.isclose(out.cumulative_logprob, total, rel_tol=1e-6)


@pytest.mark.parametrize("bad", [
    dict(prompt=""),
    dict(params=dict(max_tokens=-1)),
    dict(params=dict(top_p=0.0)),
    dict(params=dict(top_p=1.5)),
    dict(params=dict(temperature=-1.0)),
    dict(prompt="x " * 3000),
    dict(params=dict(max_tokens=4000)),
    dict(prompt=[10**9]),
])
def test_bad_input_raises_and_engine_keeps_serving(smollm2_llm, bad):
    with pytest.raises(ValueError):
        params = SamplingParams(**bad.get("params", {}))
        smollm2_llm.generate(bad.get("prompt", "Hello"), params, use_tqdm=False)
    out = smollm2_llm.generate("Hello", SamplingParams(max_tokens=3, ignore_eos=True), use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 3
    smollm2_llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_random_aborts_free_every_block(make_smollm2_llm):
    llm = make_smollm2_llm(num_gpu_blocks_override=64, max_num_batched_tokens=32)
    engine = llm.llm_engine
    rng = random.Random(0)
    live: set[str] = set()
    for i in range(24):
        engine.add_request(f"r{i}", "The history of the world in brief: " * rng.randint(1, 6),
                           SamplingParams(max_tokens=rng.randint(4, 30), ignore_eos=True))
        live.add(f"r{i}")
    steps = 0
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                live.discard(out.request_id)
        steps += 1
        if live and rng.random() < 0.3:  # abort mid-prefill or mid-decode
            victim = rng.choice(sorted(live))
            engine.abort_request(victim)
            live.discard(victim)
    assert steps > 0
    engine.scheduler.kv_cache_manager.check_all_free()


def test_logit_bias_min_tokens_and_eos_through_the_engine(smollm2_llm):
    tok = smollm2_llm.get_tokenizer()
    forced = tok(" banana", add_special_tokens=False).input_ids[0]
    out = smollm2_llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=4, logit_bias={forced: 100.0}),
                               use_tqdm=False)[0].outputs[0]
    assert out.token_ids == [forced] * 4
    # EOS pushed to the top: min_tokens holds it back for 3 tokens, then it ends the request.
    eos = tok.eos_token_id
    out = smollm2_llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=10, min_tokens=3,
                                                          logit_bias={eos: 100.0}), use_tqdm=False)[0].outputs[0]
    assert len(out.token_ids) == 4 and eos not in out.token_ids[:3] and out.token_ids[3] == eos
    assert out.finish_reason == "stop"


def test_presence_penalty_reduces_repetition(smollm2_llm):
    prompt = "Repeat after me: the the the the the the the the"
    plain = smollm2_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True),
                                 use_tqdm=False)[0].outputs[0].token_ids
    penalised = smollm2_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True,
                                                            presence_penalty=2.0, frequency_penalty=1.0),
                                     use_tqdm=False)[0].outputs[0].token_ids
    assert len(set(penalised)) > len(set(plain))
