"""On the GPU, greedy outputs do not depend on scheduling: prefix caching on/off, chunked prefill,
preemption, CUDA graphs or eager. float32 against HF transformers on the GPU."""
from __future__ import annotations

import random

import pytest
import torch

from pagedllm import LLM, SamplingParams
from tests.helpers.hf_gpu import hf_greedy_with_logprobs

ARCH = "qwen3"  # q/k norm and a head_dim that is not hidden / heads: the most to get wrong
EOS_IDS = {2, 5}
SHARED = [7 + (i * 37) % 370 for i in range(40)]  # 40 tokens: two and a half blocks of 16
GREEDY = SamplingParams(temperature=0, max_tokens=16)


def _prompts() -> list[list[int]]:
    rng = random.Random(5)
    return [SHARED + [rng.randrange(6, 384) for _ in range(rng.randint(1, 30))] for _ in range(8)]


@pytest.fixture(scope="module")
def model_and_reference(tiny_gpu_model, hf_on_gpu):
    model = tiny_gpu_model(ARCH)
    hf = hf_on_gpu(model, torch.float32)
    return model, [hf_greedy_with_logprobs(hf, p, 16, eos_ids=EOS_IDS)[0] for p in _prompts()]


def _generate(folder: str, **kwargs) -> tuple[LLM, list[list[int]]]:
    kwargs.setdefault("num_gpu_blocks_override", 128)
    kwargs.setdefault("cuda_graph_sizes", [1, 2, 4, 8])
    llm = LLM(folder, dtype="float32", max_model_len=256, device="cuda", **kwargs)
    outs = llm.generate([{"prompt_token_ids": p} for p in _prompts()], GREEDY, use_tqdm=False)
    return llm, [o.outputs[0].token_ids for o in outs]


def test_prefix_cache_hits_do_not_change_outputs(attention_backend, model_and_reference):
    model, reference = model_and_reference
    llm, first = _generate(model.folder)
    assert first == reference
    kv = llm.llm_engine.scheduler.kv_cache_manager
    hits = kv.prefix_cache_hits
    again = [o.outputs[0].token_ids for o in
             llm.generate([{"prompt_token_ids": p} for p in _prompts()], GREEDY, use_tqdm=False)]
    assert again == reference and kv.prefix_cache_hits > hits
    kv.check_all_free()


def test_prefix_caching_off(attention_backend, model_and_reference):
    model, reference = model_and_reference
    llm, outs = _generate(model.folder, enable_prefix_caching=False)
    assert outs == reference
    assert llm.llm_engine.scheduler.kv_cache_manager.prefix_cache_hits == 0


def test_chunked_prefill_and_preemption(attention_backend, model_and_reference):
    model, reference = model_and_reference
    # 12 blocks of 8 tokens, 8-token chunks: prompts are split and requests preempt each other.
    llm, outs = _generate(model.folder, num_gpu_blocks_override=12, block_size=8, max_num_batched_tokens=8,
                          enable_prefix_caching=False)
    assert outs == reference
    assert llm.llm_engine.scheduler.num_preemptions > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_cuda_graphs_equal_eager(model_and_reference, monkeypatch):
    monkeypatch.setenv("PAGEDLLM_ATTENTION_BACKEND", "triton")
    model, reference = model_and_reference
    graphs_llm, graphs_out = _generate(model.folder, cuda_graph_sizes=[1, 2, 4, 8])
    runner = graphs_llm.llm_engine.executor.worker.runner
    assert runner.graphs is not None and runner.graphs.sizes == [1, 2, 4, 8]
    assert runner.graphs.num_replays > 0
    eager_llm, eager_out = _generate(model.folder, enforce_eager=True)
    assert eager_llm.llm_engine.executor.worker.runner.graphs is None
    assert graphs_out == eager_out == reference


def test_async_scheduling_equals_synchronous(model_and_reference):
    """Step N+1 launched before step N is read (inputs taken from the device, CUDA graphs) gives
    the same tokens and logprobs as waiting for every step, for greedy, seeded and penalised rows."""
    model, reference = model_and_reference
    params = [
        SamplingParams(temperature=0, max_tokens=16, logprobs=2),
        SamplingParams(temperature=1.0, seed=3, max_tokens=20, top_p=0.9),
        SamplingParams(temperature=0.7, seed=4, max_tokens=12, repetition_penalty=1.2, presence_penalty=0.3),
        SamplingParams(temperature=1.0, seed=5, max_tokens=24, min_tokens=4),
    ] * 2
    prompts = [{"prompt_token_ids": p} for p in _prompts()]
    results = {}
    for enabled in (False, True):
        llm = LLM(model.folder, dtype="float32", max_model_len=256, device="cuda", num_gpu_blocks_override=128,
                  cuda_graph_sizes=[1, 2, 4, 8], async_scheduling=enabled)
        assert llm.llm_engine.engine_core.async_scheduling is enabled
        outs = llm.generate(prompts, params, use_tqdm=False)
        results[enabled] = [(o.outputs[0].token_ids, o.outputs[0].finish_reason,
                             [sorted((t, lp.logprob) for t, lp in d.items()) for d in o.outputs[0].logprobs or []])
                            for o in outs]
        llm.llm_engine.scheduler.kv_cache_manager.check_all_free()
        del llm
    for got, want in zip(results[True], results[False]):
        assert got[:2] == want[:2]
        for g, w in zip(got[2], want[2]):
            assert [t for t, _ in g] == [t for t, _ in w]
            assert max(abs(a - b) for (_, a), (_, b) in zip(g, w)) <= 1e-4
    assert results[True][0][0] == reference[0]


def test_piecewise_graphs_equal_eager(model_and_reference, monkeypatch):
    """Steps with prompt tokens replayed as graph pieces around eager attention give the same
    tokens and prompt logprobs as running them eagerly; a 48-token budget makes every prompt step
    a chunk padded to 16, 32 or 48 tokens, mixed with other requests' decodes."""
    monkeypatch.setenv("PAGEDLLM_ATTENTION_BACKEND", "triton")
    model, reference = model_and_reference
    params = SamplingParams(temperature=0, max_tokens=16, prompt_logprobs=2)
    prompts = [{"prompt_token_ids": p} for p in _prompts()]
    results = {}
    for mode in ("full_and_piecewise", "full_decode_only"):
        llm = LLM(model.folder, dtype="float32", max_model_len=256, device="cuda", num_gpu_blocks_override=128,
                  cuda_graph_sizes=[1, 2, 4, 8], max_num_batched_tokens=48, enable_prefix_caching=False,
                  cuda_graph_mode=mode)
        piecewise = llm.llm_engine.executor.worker.runner.piecewise
        if mode == "full_and_piecewise":
            assert piecewise is not None and piecewise.sizes == [16, 32, 48]
        else:
            assert piecewise is None
        outs = llm.generate(prompts, params, use_tqdm=False)
        if piecewise is not None:
            assert piecewise.num_replays > 0
        results[mode] = [(o.outputs[0].token_ids, o.prompt_logprobs) for o in outs]
        llm.llm_engine.scheduler.kv_cache_manager.check_all_free()
        del llm
    assert [r[0] for r in results["full_and_piecewise"]] == reference
    assert [r[0] for r in results["full_decode_only"]] == reference
    for (_, got), (_, want) in zip(results["full_and_piecewise"], results["full_decode_only"]):
        for g, w in zip(got[1:], want[1:]):  # position 0 has no logprobs
            assert sorted(g) == sorted(w)
            assert max(abs(g[t].logprob - w[t].logprob) for t in g) <= 1e-4


@pytest.mark.parametrize("method", ["ngram", "suffix"])
def test_speculative_decoding(attention_backend, model_and_reference, method):
    """Verify steps (several tokens per request, through the piecewise graphs) give HF's tokens."""
    model, reference = model_and_reference
    spec = ({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1, "prompt_lookup_max": 3}
            if method == "ngram" else {"method": "suffix", "num_speculative_tokens": 6})
    llm, outs = _generate(model.folder, speculative_config=spec)
    assert outs == reference
    assert llm.llm_engine.engine_core.make_stats().spec_decoding.num_drafts > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_draft_model_is_its_own_draft(attention_backend, model_and_reference):
    """The checkpoint drafting for itself on the GPU: HF's tokens, nearly every draft accepted."""
    model, reference = model_and_reference
    llm, outs = _generate(model.folder, speculative_config={"method": "draft_model", "model": model.folder,
                                                             "num_speculative_tokens": 3})
    assert outs == reference
    stats = llm.llm_engine.engine_core.make_stats().spec_decoding
    assert stats.num_drafts > 0 and stats.acceptance_rate > 0.9
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


@pytest.mark.parametrize("enforce_eager", [False, True], ids=["graphs", "eager"])
def test_draft_model_passes_in_graphs(model_and_reference, enforce_eager):
    """The draft's passes replay its own captured graphs (decode passes and the catch-up in
    pieces): as its own draft the model still gets nearly every draft accepted, which it only
    does if those passes compute what the target computes."""
    model, reference = model_and_reference
    llm, outs = _generate(model.folder, enforce_eager=enforce_eager, max_num_batched_tokens=256,
                          speculative_config={"method": "draft_model", "model": model.folder,
                                              "num_speculative_tokens": 4})
    assert outs == reference
    stats = llm.llm_engine.engine_core.make_stats().spec_decoding
    assert stats.num_drafts > 0 and stats.acceptance_rate > 0.9
    runtime = llm.llm_engine.executor.worker.runner.speculator.proposer._runtime
    if enforce_eager:
        assert runtime.draft_graphs is None
    else:
        assert runtime.draft_graphs.num_replays > 0 and runtime.draft_piecewise.num_replays > 0
        assert runtime.backend is not llm.llm_engine.executor.worker.backend


def test_a_draft_of_another_shape(model_and_reference, tiny_gpu_model):
    """A llama drafting for the qwen3 target (other head size: its own attention workspace, so the
    target's captured graphs keep theirs): the target's tokens."""
    model, reference = model_and_reference
    draft = tiny_gpu_model("llama")
    llm, outs = _generate(model.folder, speculative_config={"method": "draft_model", "model": draft.folder,
                                                             "num_speculative_tokens": 3})
    assert outs == reference
    assert llm.llm_engine.engine_core.make_stats().spec_decoding.num_drafts > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_verify_steps_replay_their_graphs(model_and_reference):
    """Steps whose every request checks k drafts replay a captured verify graph (k + 1 tokens a
    request, mixed attention inside): drafts that are always right still give HF's tokens."""
    from tests.helpers.spec_oracle import oracle_methods

    model, reference = model_and_reference
    k = 3
    with oracle_methods({tuple(p): list(r) for p, r in zip(_prompts(), reference)}):
        llm, outs = _generate(model.folder, speculative_config={"method": "oracle", "num_speculative_tokens": k})
    assert outs == reference
    runner = llm.llm_engine.executor.worker.runner
    assert runner.verify_graphs is not None and runner.verify_graphs.query_len == k + 1
    assert runner.verify_graphs.num_replays > 0
    stats = llm.llm_engine.engine_core.make_stats().spec_decoding
    assert stats.num_accepted_tokens == stats.num_draft_tokens > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()
