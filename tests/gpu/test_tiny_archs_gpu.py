"""Every registered architecture on the GPU equals HF transformers on the GPU: greedy tokens
exactly in float32 (both attention backends, CUDA graphs on where the backend allows them), and
by vLLM's top-5 criterion in bfloat16."""
from __future__ import annotations

import random

import pytest
import torch

from pagedllm import LLM, SamplingParams
from tests.helpers.hf_gpu import check_logprobs_close, hf_greedy_with_logprobs
from tests.helpers.tiny_models import TINY_ARCHS

EOS_IDS = {2, 5}  # the tiny checkpoints' generation_config


def prompts(seed: int, n: int = 6) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(6, 384) for _ in range(rng.randint(3, 70))] for _ in range(n)]


def make_llm(folder: str, dtype: str, **kwargs) -> LLM:
    kwargs.setdefault("num_gpu_blocks_override", 128)
    kwargs.setdefault("cuda_graph_sizes", [1, 2, 4, 8])  # a few graphs: start-up stays short
    return LLM(folder, dtype=dtype, max_model_len=256, device="cuda", **kwargs)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_float32_greedy_and_prompt_logprobs_equal_hf(arch, attention_backend, tiny_gpu_model, hf_on_gpu):
    model = tiny_gpu_model(arch)
    hf = hf_on_gpu(model, torch.float32)
    llm = make_llm(model.folder, "float32")
    runner = llm.llm_engine.executor.worker.runner
    assert (runner.graphs is not None) == (attention_backend == "triton")
    ids = prompts(1)
    outs = llm.generate([{"prompt_token_ids": p} for p in ids],
                        SamplingParams(temperature=0, max_tokens=20, prompt_logprobs=1), use_tqdm=False)
    for p, out in zip(ids, outs):
        assert out.outputs[0].token_ids == hf_greedy_with_logprobs(hf, p, 20, eos_ids=EOS_IDS)[0]
        with torch.inference_mode():
            logits = hf(torch.tensor([p], device="cuda")).logits[0].float()
        expected = logits.log_softmax(-1)[:-1].gather(1, torch.tensor(p[1:], device="cuda")[:, None])[:, 0]
        got = torch.tensor([out.prompt_logprobs[i][p[i]].logprob for i in range(1, len(p))])
        assert (got - expected.cpu()).abs().max().item() <= 2e-3


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_bfloat16_agrees_with_hf_by_top5(arch, tiny_gpu_model, hf_on_gpu):
    model = tiny_gpu_model(arch)
    hf = hf_on_gpu(model, torch.bfloat16)
    llm = make_llm(model.folder, "bfloat16")
    ids = prompts(3, n=8)
    outs = llm.generate([{"prompt_token_ids": p} for p in ids],
                        SamplingParams(temperature=0, max_tokens=24, logprobs=5), use_tqdm=False)
    agreed = []
    for p, out in zip(ids, outs):
        ref, ref_tops = hf_greedy_with_logprobs(hf, p, 24, k=5, eos_ids=EOS_IDS)
        ours = out.outputs[0].token_ids
        our_tops = [{t: lp.logprob for t, lp in pos.items()} for pos in out.outputs[0].logprobs]
        agreed.append(check_logprobs_close(ours, our_tops, ref, ref_tops))
    # bf16 may diverge, but not from the first token on for most prompts
    assert sum(agreed) >= len(ids) * 4, agreed


def test_bfloat16_is_the_cuda_default(tiny_gpu_model):
    llm = LLM(tiny_gpu_model("llama").folder, max_model_len=256, num_gpu_blocks_override=64, device="cuda")
    assert llm.llm_engine.config.model_config.dtype == "bfloat16"
    assert next(llm.llm_engine.executor.worker.model.parameters()).dtype == torch.bfloat16
