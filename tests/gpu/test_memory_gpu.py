"""KV cache sizing on the GPU: the profiled budget holds under a full batch, and a context that
does not fit is lowered (derived) or refused (explicit) at start-up instead of failing later."""
from __future__ import annotations

import pytest
import torch

from pagedllm import LLM, SamplingParams

MiB = 1 << 20
BLOCK_BYTES = 4096  # tiny llama in bf16: 2 layers x K,V x 16 tokens x 2 kv heads x 16 dims x 2 bytes


def test_profiled_cache_stays_within_utilization(tiny_gpu_model):
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    utilization = (total - free + 1024 * MiB) / total  # what is in use now plus 1 GiB
    llm = LLM(tiny_gpu_model("llama").folder, gpu_memory_utilization=utilization, max_num_seqs=64,
              max_num_batched_tokens=4096, device="cuda")
    worker = llm.llm_engine.executor.worker
    assert {"load", "profile"} <= set(worker.startup_times)
    assert llm.llm_engine.num_blocks * BLOCK_BYTES > 512 * MiB  # most of the GiB went to the cache
    prompts = [{"prompt_token_ids": [7 + (i + j) % 300 for j in range(60)]} for i in range(64)]
    llm.generate(prompts, SamplingParams(temperature=1.0, top_p=0.9, max_tokens=8, logprobs=3), use_tqdm=False)
    free, total = torch.cuda.mem_get_info()
    assert total - free <= utilization * total + 64 * MiB


def test_context_that_does_not_fit_is_lowered_or_refused(tiny_gpu_model, monkeypatch):
    monkeypatch.setattr("pagedllm.worker.worker.kv_cache_budget", lambda profile, utilization: 10 * BLOCK_BYTES)
    folder = tiny_gpu_model("llama").folder
    llm = LLM(folder, dtype="bfloat16", device="cuda")  # max_model_len derived: 256 tokens
    assert llm.llm_engine.num_blocks == 10
    assert llm.llm_engine.executor.config.model_config.max_model_len == 160
    assert llm.llm_engine.scheduler.max_model_len == 160  # the scheduler caps requests there
    out = llm.generate([{"prompt_token_ids": list(range(10, 110))}], SamplingParams(max_tokens=8), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 8
    with pytest.raises(ValueError, match="max_model_len=256 needs 16 KV blocks but only 10 fit"):
        LLM(folder, dtype="bfloat16", device="cuda", max_model_len=256)
