"""Greedy outputs do not depend on how the engine schedules: prefix caching, chunking, preemption,
batching; on the dequantized path (float32 KV cache) and on the quantized one (the GGUF's own types,
with its default bfloat16 KV cache)."""
from __future__ import annotations

import pytest

from pagedllm import SamplingParams

SHARED = "You are a helpful assistant. Answer briefly and precisely. " * 3
PROMPTS = [SHARED + q for q in (
    "What is the tallest mountain?", "Name three fruits.", "What is 12 times 12?", "Define entropy.",
    "Who wrote Hamlet?", "What is the speed of light?", "Say hello in Spanish.", "What colour is the sky?",
)]
GREEDY = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)


def _token_ids(llm, prompts=PROMPTS) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY, use_tqdm=False)]


def _assert_all_blocks_free(llm) -> None:
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


VARIANTS = {"none": {"quantization": "none"}, "gguf": {"quantization": "gguf"}}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> dict:
    return VARIANTS[request.param]


@pytest.fixture(scope="module")
def base_llm(smollm2_llm, smollm2_quantized_llm, variant):
    return smollm2_quantized_llm if variant["quantization"] == "gguf" else smollm2_llm


@pytest.fixture(scope="module")
def reference(base_llm) -> list[list[int]]:
    return [_token_ids(base_llm, [p])[0] for p in PROMPTS]  # batch of 1, one at a time


def test_batch_of_many_equals_batch_of_one(base_llm, reference):
    assert _token_ids(base_llm) == reference
    _assert_all_blocks_free(base_llm)


def test_prefix_cache_hits_do_not_change_outputs(base_llm, reference):
    kv = base_llm.llm_engine.scheduler.kv_cache_manager
    hits_before = kv.prefix_cache_hits
    assert _token_ids(base_llm) == reference  # the shared prefix is cached by now
    assert kv.prefix_cache_hits > hits_before
    _assert_all_blocks_free(base_llm)


def test_prefix_caching_off(make_smollm2_llm, variant, reference):
    llm = make_smollm2_llm(enable_prefix_caching=False, **variant)
    assert _token_ids(llm) == reference
    assert llm.llm_engine.scheduler.kv_cache_manager.prefix_cache_hits == 0
    _assert_all_blocks_free(llm)


def test_tiny_prefill_chunks(make_smollm2_llm, variant, reference):
    llm = make_smollm2_llm(max_num_batched_tokens=8, enable_prefix_caching=False, **variant)
    assert _token_ids(llm) == reference
    _assert_all_blocks_free(llm)


def test_forced_preemption(make_smollm2_llm, variant, reference):
    # 12 blocks of 16 tokens: each request needs up to 4 blocks, eight of them cannot all fit.
    llm = make_smollm2_llm(num_gpu_blocks_override=12, enable_prefix_caching=False, **variant)
    assert _token_ids(llm) == reference
    assert llm.llm_engine.scheduler.num_preemptions > 0
    _assert_all_blocks_free(llm)
