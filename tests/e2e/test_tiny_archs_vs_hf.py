"""The registered architectures, through the whole engine, equal HF transformers on random weights."""
from __future__ import annotations

import random

import pytest

from pagedllm import LLM, SamplingParams
from tests.helpers.hf_oracle import hf_greedy, hf_prompt_logprobs
from tests.helpers.tiny_models import TINY_ARCHS

# Through the whole engine: every dense architecture, and of the mixtures of experts one per engine
# path (Qwen3-MoE's experts; DeepSeek's latent cache, with and without q_lora). Mixtral and
# Qwen2-MoE take the same paths; tests/models/test_model_hf_parity.py holds their logits to HF's.
E2E_ARCHS = [arch for arch in TINY_ARCHS if arch not in ("mixtral", "qwen2_moe")]

EOS_IDS = {2, 5}  # the tiny checkpoints' generation_config


def _prompts(seed: int, n: int = 6) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(6, 384) for _ in range(rng.randint(3, 70))] for _ in range(n)]


@pytest.fixture(scope="module", params=E2E_ARCHS)
def tiny(request, tiny_hf_model, smollm2_tokenizer_dir):
    model = tiny_hf_model(request.param)
    # The tiny checkpoints have no tokenizer; SmolLM2's decodes their ids (< 384) well enough.
    llm = LLM(model.folder, tokenizer=smollm2_tokenizer_dir, dtype="float32", max_model_len=256,
              num_gpu_blocks_override=128, block_size=16)
    return model, llm


def test_greedy_and_prompt_logprobs_equal_hf(tiny):
    model, llm = tiny
    prompts = _prompts(1)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=20, prompt_logprobs=1), use_tqdm=False)
    for ids, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(model.hf_model, ids, 20, EOS_IDS)
        expected = hf_prompt_logprobs(model.hf_model, ids)
        got = [out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))]
        assert max(abs(a - b) for a, b in zip(got, expected)) <= 1e-3


def test_chunked_prefill_and_preemption_equal_hf(tiny, tiny_hf_model, smollm2_tokenizer_dir):
    model, _ = tiny
    # 10 blocks of 8 tokens, 8-token chunks: prompts are split and requests preempt each other.
    llm = LLM(model.folder, tokenizer=smollm2_tokenizer_dir, dtype="float32", max_model_len=256,
              num_gpu_blocks_override=10, block_size=8, max_num_batched_tokens=8)
    prompts = _prompts(2, n=5)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    for ids, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(model.hf_model, ids, 12, set())
    assert llm.llm_engine.scheduler.num_preemptions > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


@pytest.mark.parametrize("method", ["ngram", "suffix"])
def test_speculative_decoding_equals_hf(tiny, smollm2_tokenizer_dir, method):
    """Drafts are found in what random weights generate (accepted or not, the tokens stay HF's)."""
    model, _ = tiny
    spec = {"method": method, "num_speculative_tokens": 3, "prompt_lookup_min": 1, "prompt_lookup_max": 3}
    if method == "suffix":
        spec = {"method": "suffix", "num_speculative_tokens": 6}
    llm = LLM(model.folder, tokenizer=smollm2_tokenizer_dir, dtype="float32", max_model_len=256,
              num_gpu_blocks_override=128, block_size=16, speculative_config=spec)
    prompts = _prompts(3, n=4)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=40, ignore_eos=True), use_tqdm=False)
    for ids, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(model.hf_model, ids, 40, set())
    assert llm.llm_engine.engine_core.make_stats().spec_decoding.num_drafts > 0


def test_sampled_drafts_keep_the_targets_distribution(tiny_hf_model, smollm2_tokenizer_dir):
    """Another architecture's random weights draft for the llama checkpoint (the same 384-token
    vocabulary, a different distribution). The sampled tokens' joint distribution over the first two
    positions (the second one drafted) is the plain engine's: a two-sample chi-square test."""
    from scipy.stats import chi2_contingency

    target, draft = tiny_hf_model("llama"), tiny_hf_model("qwen2")
    common = dict(tokenizer=smollm2_tokenizer_dir, dtype="float32", max_model_len=256, num_gpu_blocks_override=512,
                  block_size=16)
    plain = LLM(target.folder, **common)
    spec = LLM(target.folder, speculative_config={"method": "draft_model", "model": draft.folder,
                                                  "num_speculative_tokens": 2}, **common)
    prompt = {"prompt_token_ids": [11, 57, 200, 31, 9]}
    n = 800
    params = [SamplingParams(temperature=1.0, top_k=3, seed=s, max_tokens=3, ignore_eos=True) for s in range(n)]

    def pairs(llm) -> list[tuple[int, int]]:
        return [tuple(o.outputs[0].token_ids[1:3]) for o in llm.generate([prompt] * n, params, use_tqdm=False)]

    a, b = pairs(plain), pairs(spec)
    cells = sorted(set(a) | set(b))
    table = [[a.count(c) for c in cells], [b.count(c) for c in cells]]
    assert chi2_contingency(table).pvalue > 1e-3, table
    stats = spec.llm_engine.engine_core.make_stats().spec_decoding
    assert stats.num_drafts > 0 and 0 < stats.num_accepted_tokens < stats.num_draft_tokens  # q differs from p
