"""Asynchronous scheduling (step N+1 launched before step N's tokens are read) changes no output.

On the CPU nothing overlaps, but every piece of the mechanism runs: placeholders in the scheduler,
input tokens read from the previous step's sampled tensor, late bookkeeping in the runner, wasted
slots of requests that stopped, dropped tokens of preempted requests.
"""
from __future__ import annotations

import random

import pytest

from pagedllm import SamplingParams

PROMPTS = [
    "The quick brown fox", "Write a haiku about the sea:", "List three prime numbers:",
    "Once upon a time, in a land far away,", "What is the capital of France?", "def fibonacci(n):",
]


def _mixed_params() -> list[SamplingParams]:
    """Greedy and seeded rows, stops of every kind, penalties, logprobs, n > 1."""
    return [
        SamplingParams(temperature=0, max_tokens=24, logprobs=3, prompt_logprobs=2),
        SamplingParams(temperature=1.0, seed=11, max_tokens=30, top_p=0.9, top_k=50),
        SamplingParams(temperature=0.8, seed=12, max_tokens=20, repetition_penalty=1.3,
                       frequency_penalty=0.4, presence_penalty=0.2),
        SamplingParams(temperature=1.0, seed=13, max_tokens=40, min_tokens=5),  # EOS ends it early or not
        SamplingParams(temperature=0, max_tokens=30, stop=["."], min_p=0.1),
        SamplingParams(temperature=1.0, seed=14, n=2, max_tokens=12, stop_token_ids=[13]),
    ]


def _summary(outputs) -> list:
    rows = []
    for out in outputs:
        for c in out.outputs:
            logprobs = None if c.logprobs is None else [sorted(d.items()) for d in c.logprobs]
            rows.append((c.token_ids, c.text, c.finish_reason, logprobs))
    return rows


def _assert_same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[:3] == w[:3]
        if w[3] is not None:
            for gpos, wpos in zip(g[3], w[3]):
                assert [t for t, _ in gpos] == [t for t, _ in wpos]
                for (_, gl), (_, wl) in zip(gpos, wpos):
                    assert gl.logprob == pytest.approx(wl.logprob, abs=1e-4) and gl.rank == wl.rank


@pytest.fixture(scope="module")
def async_llm(make_smollm2_llm):
    return make_smollm2_llm(async_scheduling=True)


def test_mixed_sampling_equals_synchronous_engine(smollm2_llm, async_llm):
    want = smollm2_llm.generate(PROMPTS, _mixed_params(), use_tqdm=False)
    got = async_llm.generate(PROMPTS, _mixed_params(), use_tqdm=False)
    _assert_same(_summary(got), _summary(want))
    assert want[0].prompt_logprobs is not None and len(got[0].prompt_logprobs) == len(want[0].prompt_logprobs)
    for gpos, wpos in zip(got[0].prompt_logprobs[1:], want[0].prompt_logprobs[1:]):
        assert gpos.keys() == wpos.keys()
        assert all(gpos[t].logprob == pytest.approx(wpos[t].logprob, abs=1e-4) for t in wpos)
    async_llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_chunked_prefill_and_preemption(make_smollm2_llm, smollm2_llm):
    greedy = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    prompts = [p * 4 for p in PROMPTS]
    want = [o.outputs[0].token_ids for o in smollm2_llm.generate(prompts, greedy, use_tqdm=False)]
    # 14 blocks of 16 tokens for six requests of up to ~90 tokens, prefill in chunks of 24 tokens
    llm = make_smollm2_llm(async_scheduling=True, num_gpu_blocks_override=14, max_num_batched_tokens=24,
                           enable_prefix_caching=False)
    got = [o.outputs[0].token_ids for o in llm.generate(prompts, greedy, use_tqdm=False)]
    assert got == want
    assert llm.llm_engine.scheduler.num_preemptions > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_next_step_is_launched_before_the_previous_result_is_read(async_llm):
    core = async_llm.llm_engine.engine_core
    events: list[str] = []
    launch = core.executor.execute_model_async

    def recording_launch(sched_out):
        k = sum(e.startswith("launch") for e in events)
        events.append(f"launch {k}")
        future = launch(sched_out)
        result = future.result

        def recording_result():
            events.append(f"read {k}")
            return result()

        future.result = recording_result
        return future

    core.executor.execute_model_async = recording_launch
    try:
        async_llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), use_tqdm=False)
    finally:
        core.executor.execute_model_async = launch
    # prefill (0) and five decodes (1-5); the sixth token is sampled by decode 5
    assert events[:5] == ["launch 0", "launch 1", "read 0", "launch 2", "read 1"]
    assert events.index("read 4") > events.index("launch 5")


def test_random_aborts_free_every_block(make_smollm2_llm):
    llm = make_smollm2_llm(async_scheduling=True, num_gpu_blocks_override=40, max_num_batched_tokens=32)
    engine = llm.llm_engine
    rng = random.Random(1)
    live: set[str] = set()
    for i in range(16):
        engine.add_request(f"r{i}", "Tell me about the history of tea. " * rng.randint(1, 5),
                           SamplingParams(max_tokens=rng.randint(2, 24), temperature=1.0, seed=i,
                                          ignore_eos=rng.random() < 0.5))
        live.add(f"r{i}")
    finished_tokens: dict[str, int] = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                live.discard(out.request_id)
                finished_tokens[out.request_id] = len(out.outputs[0].token_ids)
        if live and rng.random() < 0.3:  # abort mid-prefill, mid-decode, or with a step in flight
            victim = rng.choice(sorted(live))
            engine.abort_request(victim)
            live.discard(victim)
    while engine.engine_core.has_unfinished_requests():  # the step launched for requests that are gone
        assert engine.step() == []
    assert finished_tokens
    engine.scheduler.kv_cache_manager.check_all_free()
