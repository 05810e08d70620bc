"""Prompt logprobs computed a chunk of logits at a time equal HF's (the runner never holds
[prompt_len, vocab] logits at once)."""
from __future__ import annotations

import random

from pagedllm import LLM, SamplingParams
from pagedllm.bench.model_folders import write_tokenizer
from tests.helpers.hf_oracle import hf_prompt_logprobs


def test_chunked_prompt_logprobs_equal_hf(tiny_hf_model, monkeypatch):
    monkeypatch.setattr("pagedllm.worker.model_runner._PROMPT_LOGITS_CHUNK", 16)
    model = tiny_hf_model("qwen2")
    write_tokenizer(model.folder, model.hf_model.config.vocab_size)
    llm = LLM(model.folder, device="cpu", dtype="float32", max_model_len=256, num_gpu_blocks_override=64,
              max_num_batched_tokens=40)  # the 90-token prompt arrives in chunks of 40, logits in chunks of 16
    rng = random.Random(7)
    prompt = [rng.randrange(6, 384) for _ in range(90)]
    out = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(max_tokens=1, prompt_logprobs=2),
                       use_tqdm=False)[0]
    got = [out.prompt_logprobs[i][prompt[i]].logprob for i in range(1, len(prompt))]
    expected = hf_prompt_logprobs(model.hf_model, prompt)
    assert len(got) == len(expected) == 89
    assert max(abs(a - b) for a, b in zip(got, expected)) <= 1e-3
