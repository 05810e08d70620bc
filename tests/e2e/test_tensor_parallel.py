"""Tensor parallelism on the CPU: two ranks (worker processes over gloo) give what one gives, on
every kind of architecture; a dead worker ends the engine quickly with its rank named."""
from __future__ import annotations

import os
import random
import signal
import time

import pytest

from pagedllm import LLM, SamplingParams
from pagedllm.executor.base import WorkerFailure
from tests.helpers.hf_oracle import check_greedy_and_prompt_logprobs, hf_greedy
from tests.helpers.tiny_gguf import T, write_tiny_llama

EOS_IDS = {2, 5}  # the tiny checkpoints' generation_config
# Dense with tied embeddings and as many KV heads as ranks (llama), experts with a shared expert
# (qwen2_moe), latent attention with experts (deepseek_v3); q/k norms (qwen3) and biases (qwen2)
# run split in test_pipeline_parallel.py, test_server_tensor_parallel.py and the quantized tests.
ARCHS = ["llama", "qwen2_moe", "deepseek_v3"]


def _prompts(seed: int, n: int = 4) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(6, 384) for _ in range(rng.randint(3, 60))] for _ in range(n)]


def _tp_llm(folder: str, tokenizer: str, tp: int = 2, **kwargs) -> LLM:
    defaults = dict(dtype="float32", max_model_len=256, num_gpu_blocks_override=64, block_size=16)
    return LLM(folder, tokenizer=tokenizer, tensor_parallel_size=tp, **{**defaults, **kwargs})


@pytest.mark.parametrize("arch", ARCHS)
def test_two_ranks_equal_hf(arch, tiny_hf_model, smollm2_tokenizer_dir):
    model = tiny_hf_model(arch)
    llm = _tp_llm(model.folder, smollm2_tokenizer_dir)
    assert llm.llm_engine.config.parallel_config.distributed_executor_backend == "mp"
    check_greedy_and_prompt_logprobs(llm, model.hf_model, _prompts(1), 12, EOS_IDS)


def test_kv_heads_replicated_over_more_ranks(tiny_hf_model, smollm2_tokenizer_dir):
    """Four ranks, two KV heads: each KV head lives on the two ranks whose query heads read it."""
    model = tiny_hf_model("llama3")
    llm = _tp_llm(model.folder, smollm2_tokenizer_dir, tp=4)
    prompts = _prompts(2, n=2)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], SamplingParams(temperature=0, max_tokens=8),
                        use_tqdm=False)
    for ids, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(model.hf_model, ids, 8, EOS_IDS)


def test_chunked_prefill_preemption_prefix_cache_and_aborts_hold(tiny_hf_model, smollm2_tokenizer_dir):
    model = tiny_hf_model("llama")
    # 10 blocks of 8 tokens, 8-token chunks: prompts are split and requests preempt each other
    llm = _tp_llm(model.folder, smollm2_tokenizer_dir, num_gpu_blocks_override=10, block_size=8,
                  max_num_batched_tokens=8)
    shared = _prompts(3, n=1)[0][:24]
    prompts = [shared + p[:10] for p in _prompts(4, n=4)]  # a common prefix: prefix-cache hits
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    engine = llm.llm_engine
    engine.add_request("doomed", {"prompt_token_ids": prompts[0]}, params)
    engine.step()
    engine.abort_request("doomed")
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    for ids, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(model.hf_model, ids, 10, set())
    assert engine.scheduler.num_preemptions > 0
    assert engine.scheduler.kv_cache_manager.prefix_cache_hits > 0
    engine.scheduler.kv_cache_manager.check_all_free()


def test_one_rank_through_worker_processes_equals_in_process(tiny_hf_model, smollm2_tokenizer_dir):
    model = tiny_hf_model("qwen3")
    params = SamplingParams(temperature=0.8, seed=7, max_tokens=10, logprobs=2)
    prompts = [{"prompt_token_ids": p} for p in _prompts(5, n=3)]
    outs = {backend: _tp_llm(model.folder, smollm2_tokenizer_dir, tp=1, distributed_executor_backend=backend)
            .generate(prompts, params, use_tqdm=False) for backend in ("uni", "mp")}
    for a, b in zip(outs["uni"], outs["mp"]):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        assert a.outputs[0].cumulative_logprob == pytest.approx(b.outputs[0].cumulative_logprob, abs=1e-5)


def test_a_gguf_file_splits_its_quantized_blocks(smollm2_tokenizer_dir, tmp_path):
    """Q8_0 rows split into whole 32-value blocks run as one rank does; a K-quant's 256-value
    blocks do not split a 256-wide row in two, which is said at start."""
    path = str(tmp_path / "tiny-q8.gguf")
    write_tiny_llama(path, T.Q8_0)
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, prompt_logprobs=0)
    prompt = [{"prompt_token_ids": [1, *range(40, 70)]}]
    one, two = (_tp_llm(path, smollm2_tokenizer_dir, tp=tp, max_model_len=128).generate(prompt, params, use_tqdm=False)
                for tp in (1, 2))
    assert one[0].outputs[0].token_ids == two[0].outputs[0].token_ids
    lp1 = [next(iter(d.values())).logprob for d in one[0].prompt_logprobs[1:]]
    lp2 = [next(iter(d.values())).logprob for d in two[0].prompt_logprobs[1:]]
    assert max(abs(a - b) for a, b in zip(lp1, lp2)) < 1e-3
    k_path = str(tmp_path / "tiny-q4k.gguf")
    write_tiny_llama(k_path, T.Q4_K)
    with pytest.raises(ValueError, match="Q4_K weight of 256 columns cannot be split"):
        _tp_llm(k_path, smollm2_tokenizer_dir, max_model_len=128)


def test_sizes_that_do_not_split_the_model_are_refused_at_start(tiny_hf_model, smollm2_gguf, smollm2_tokenizer_dir):
    folder = tiny_hf_model("llama").folder
    with pytest.raises(ValueError, match=r"tensor_parallel_size=3 does not divide the number of attention heads \(4\)"):
        LLM(folder, tokenizer=smollm2_tokenizer_dir, tensor_parallel_size=3)
    # the default model: 9 heads, 3 KV heads
    with pytest.raises(ValueError, match=r"does not divide the number of attention heads \(9\)"):
        LLM(smollm2_gguf, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="need 'mp'"):
        LLM(folder, tokenizer=smollm2_tokenizer_dir, tensor_parallel_size=2, distributed_executor_backend="uni")


def test_a_killed_worker_ends_the_engine_within_seconds(tiny_hf_model, smollm2_tokenizer_dir):
    llm = _tp_llm(tiny_hf_model("llama").folder, smollm2_tokenizer_dir)
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    engine = llm.llm_engine
    engine.add_request("r", {"prompt_token_ids": [1, 7, 9]}, params)
    engine.step()
    os.kill(engine.executor.workers[1].proc.pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerFailure, match=r"Worker rank 1 .* was killed by signal SIGKILL"):
        while engine.has_unfinished_requests():
            engine.step()
    assert time.monotonic() - start < 5
    assert not any(w.proc.is_alive() for w in engine.executor.workers)  # the other rank is stopped too
