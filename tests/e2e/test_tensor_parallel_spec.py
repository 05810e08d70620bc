"""Speculative decoding over two tensor-parallel ranks: a draft model (whole on every rank) and
EAGLE heads (reading the split target's embedding, LM head and hidden states) give the target's
greedy tokens, and sampled tokens equal one rank's with the same seed."""
from __future__ import annotations

import pytest

from pagedllm import LLM, SamplingParams
from tests.helpers.eagle_heads import write_eagle_head
from tests.helpers.hf_oracle import hf_greedy

PROMPTS = [[1, 5, 9, 33, 120, 7, 5, 9, 33], [1, 50, 60, 70, 50, 60, 200, 201]]


@pytest.fixture(scope="module")
def spec_configs(tiny_hf_model, tmp_path_factory):
    target = tiny_hf_model("llama")
    draft = tiny_hf_model("qwen2")  # another architecture of the same vocabulary
    config = target.hf_model.config
    return target, {
        "draft_model": {"method": "draft_model", "model": draft.folder, "num_speculative_tokens": 3},
        "eagle": {"method": "eagle", "num_speculative_tokens": 3,
                  "model": write_eagle_head(str(tmp_path_factory.mktemp("eagle")), config, "eagle")},
        "eagle3": {"method": "eagle3", "num_speculative_tokens": 3,
                   "model": write_eagle_head(str(tmp_path_factory.mktemp("eagle3")), config, "eagle3",
                                             draft_vocab_size=128, aux_layers=[0, 1, 1])},
    }


@pytest.mark.parametrize("method", ["draft_model", "eagle", "eagle3"])
def test_two_ranks_speculate_as_one(method, spec_configs, smollm2_tokenizer_dir):
    target, configs = spec_configs
    prompts = [{"prompt_token_ids": p} for p in PROMPTS]
    greedy = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    sampled = SamplingParams(temperature=0.8, seed=4, max_tokens=16, ignore_eos=True)
    outs = {}
    for tp in (1, 2):
        llm = LLM(target.folder, tokenizer=smollm2_tokenizer_dir, dtype="float32", max_model_len=128,
                  num_gpu_blocks_override=64, tensor_parallel_size=tp, speculative_config=configs[method])
        if tp == 2:
            got = llm.generate(prompts, greedy, use_tqdm=False)
            assert [o.outputs[0].token_ids for o in got] == [hf_greedy(target.hf_model, p, 16, set()) for p in PROMPTS]
            assert llm.llm_engine.engine_core.make_stats().spec_decoding.num_drafts > 0
        outs[tp] = [o.outputs[0].token_ids for o in llm.generate(prompts, sampled, use_tqdm=False)]
        llm.llm_engine.engine_core.shutdown()
    assert outs[1] == outs[2]


def test_speculation_over_pipeline_stages_is_refused(spec_configs, smollm2_tokenizer_dir):
    target, configs = spec_configs
    with pytest.raises(ValueError, match="Speculative decoding with pipeline_parallel_size > 1 is not supported yet"):
        LLM(target.folder, tokenizer=smollm2_tokenizer_dir, pipeline_parallel_size=2,
            speculative_config=configs["draft_model"])
