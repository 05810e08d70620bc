"""Pipeline parallelism on the CPU: the layers split into two stages (worker processes, hidden
states passed between them over gloo) give what one rank gives, alone and with tensor parallelism
inside each stage, on the default model and on tiny models with tied heads, biases, experts and
latent attention."""
from __future__ import annotations

import random

import pytest

from pagedllm import LLM, SamplingParams
from tests.helpers.hf_oracle import check_greedy_and_prompt_logprobs, hf_greedy

EOS_IDS = {2, 5}  # the tiny checkpoints' generation_config


def _prompts(seed: int, n: int = 3) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(6, 384) for _ in range(rng.randint(3, 60))] for _ in range(n)]


@pytest.mark.parametrize("arch, tp", [("llama", 1), ("qwen2_moe", 1), ("deepseek_v3", 1), ("qwen3", 2)])
def test_two_stages_equal_hf(arch, tp, tiny_hf_model, smollm2_tokenizer_dir):
    """llama: a tied head on the last stage, which loads the embedding's table itself; qwen3 with
    tp=2: four ranks, two per stage."""
    model = tiny_hf_model(arch)
    llm = LLM(model.folder, tokenizer=smollm2_tokenizer_dir, pipeline_parallel_size=2, tensor_parallel_size=tp,
              dtype="float32", max_model_len=256, num_gpu_blocks_override=64)
    check_greedy_and_prompt_logprobs(llm, model.hf_model, _prompts(11), 10, EOS_IDS)


def test_chunked_prefill_and_preemption_hold_over_stages(tiny_hf_model, smollm2_tokenizer_dir):
    model = tiny_hf_model("qwen3")
    llm = LLM(model.folder, tokenizer=smollm2_tokenizer_dir, pipeline_parallel_size=2, dtype="float32",
              max_model_len=256, num_gpu_blocks_override=10, block_size=8, max_num_batched_tokens=8)
    prompts = _prompts(12, n=4)
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    for ids, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(model.hf_model, ids, 10, set())
    assert llm.llm_engine.scheduler.num_preemptions > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_the_default_model_over_two_stages_equals_one_rank(make_smollm2_llm, smollm2_quantized_llm):
    """Its GGUF blocks as stored, 15 layers a stage, the tied Q8_0 head on the second."""
    prompts = ["The capital of France is", "def fibonacci(n):"]
    params = SamplingParams(temperature=0, max_tokens=16, seed=3)
    two = make_smollm2_llm(quantization="gguf", pipeline_parallel_size=2, max_model_len=512)
    want = smollm2_quantized_llm.generate(prompts, params, use_tqdm=False)
    got = two.generate(prompts, params, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in got] == [o.outputs[0].token_ids for o in want]
    sampled = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=16, seed=5)
    assert ([o.outputs[0].token_ids for o in two.generate(prompts, sampled, use_tqdm=False)]
            == [o.outputs[0].token_ids for o in smollm2_quantized_llm.generate(prompts, sampled, use_tqdm=False)])


def test_more_stages_than_layers_is_refused(tiny_hf_model, smollm2_tokenizer_dir):
    with pytest.raises(ValueError, match=r"pipeline_parallel_size=3 is larger than the number of layers \(2\)"):
        LLM(tiny_hf_model("llama").folder, tokenizer=smollm2_tokenizer_dir, pipeline_parallel_size=3)
