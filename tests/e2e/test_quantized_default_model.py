"""The default model (SmolLM2-135M-Instruct, Q4_1 with a Q8_0 embedding) on the quantized path
against the same file dequantized at load (`quantization="none"`, the HF-exact path)."""
from __future__ import annotations

import os

import numpy as np

from pagedllm import SamplingParams

LONG_TEXT = os.path.join(os.path.dirname(__file__), "..", "data", "long_english.txt")
QUESTIONS = ["What is the capital of France?", "Write one sentence about the sea.", "Name three colours.",
             "How do I learn a new language?", "At what temperature does water boil?", "Suggest a good book.",
             "What should I eat for breakfast?", "What makes a good friend?"]
CHATS = [[{"role": "user", "content": q}] for q in QUESTIONS]


def _mean_nll(llm, token_ids: list[int]) -> float:
    params = SamplingParams(max_tokens=1, prompt_logprobs=0)
    out = llm.generate([{"prompt_token_ids": token_ids}], params, use_tqdm=False)[0]
    return -float(np.mean([next(iter(d.values())).logprob for d in out.prompt_logprobs[1:]]))


def test_long_text_nll_within_two_percent(smollm2_llm, smollm2_quantized_llm):
    with open(LONG_TEXT, encoding="utf-8") as f:
        ids = smollm2_llm.get_tokenizer()(f.read())["input_ids"]
    assert len(ids) >= 500
    reference, quantized = _mean_nll(smollm2_llm, ids), _mean_nll(smollm2_quantized_llm, ids)
    print(f"mean NLL over {len(ids)} tokens: none {reference:.4f}, gguf {quantized:.4f} "
          f"({100 * (quantized / reference - 1):+.2f}%)")
    assert abs(quantized / reference - 1) <= 0.02


def test_greedy_outputs_are_fluent_and_mostly_equal(smollm2_llm, smollm2_quantized_llm):
    """Reported, not asserted equal: int8 activations move some near-ties."""
    greedy = SamplingParams(temperature=0.0, max_tokens=24)
    ref = smollm2_llm.chat(CHATS, greedy, use_tqdm=False)
    got = smollm2_quantized_llm.chat(CHATS, greedy, use_tqdm=False)
    equal = sum(r.outputs[0].token_ids == g.outputs[0].token_ids for r, g in zip(ref, got))
    same_prefix = [next((i for i, (a, b) in enumerate(zip(r.outputs[0].token_ids, g.outputs[0].token_ids)) if a != b),
                        len(g.outputs[0].token_ids)) for r, g in zip(ref, got)]
    print(f"greedy agreement: {equal}/{len(CHATS)} equal; tokens equal before the first difference: {same_prefix}")
    for g in got:
        text = g.outputs[0].text
        assert len(g.outputs[0].token_ids) > 0 and text.strip()
        assert sum(c.isalpha() or c.isspace() for c in text) >= 0.7 * len(text), text  # words, not noise


def test_the_bfloat16_kv_cache_holds_twice_the_tokens_at_the_same_quality(make_smollm2_llm, smollm2_llm):
    """The quantized path's default KV cache is bfloat16 under its float32 activations: the same
    budget holds twice the blocks of kv_cache_dtype="float32", and the long text's NLL stays within
    0.5% of the float32 cache's. The dequantized path keeps the model's dtype."""
    import torch

    budget = 64 << 20
    f32 = make_smollm2_llm(quantization="gguf", kv_cache_memory=budget, kv_cache_dtype="float32")
    bf16 = make_smollm2_llm(quantization="gguf", kv_cache_memory=budget)
    assert bf16.llm_engine.executor.worker.runner.kv_caches[0].dtype == torch.bfloat16
    assert smollm2_llm.llm_engine.executor.worker.runner.kv_caches[0].dtype == torch.float32
    assert bf16.llm_engine.num_blocks == 2 * f32.llm_engine.num_blocks
    with open(LONG_TEXT, encoding="utf-8") as f:
        ids = f32.get_tokenizer()(f.read())["input_ids"]
    reference, narrow = _mean_nll(f32, ids), _mean_nll(bf16, ids)
    print(f"mean NLL: float32 cache {reference:.4f}, bfloat16 cache {narrow:.4f}")
    assert abs(narrow / reference - 1) <= 0.005
