"""vLLM drop-in through the offline API: LLM(...) takes vLLM's no-op arguments and refuses an
unsupported value before it loads anything (issue 17, item 9)."""
from __future__ import annotations

import pytest

from tests.helpers.vllm_args import HARMLESS


def test_llm_refuses_before_loading_and_accepts_the_harmless(tiny_hf_model, smollm2_tokenizer_dir) -> None:
    from pagedllm import LLM, SamplingParams

    with pytest.raises(ValueError, match="data_parallel_size=2 is not supported yet"):
        LLM("/nonexistent/model", data_parallel_size=2)  # no "model not found": refused first
    with pytest.raises(TypeError, match="no_such_argument"):  # names vLLM does not have stay errors
        LLM("/nonexistent/model", no_such_argument=1)
    llm = LLM(tiny_hf_model("llama").folder, tokenizer=smollm2_tokenizer_dir, max_model_len=128,
              num_gpu_blocks_override=32, **HARMLESS)
    out = llm.generate("in the", SamplingParams(max_tokens=2, ignore_eos=True), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 2


def test_llm_default_sampling_params_come_from_the_generation_config(tiny_hf_model, smollm2_tokenizer_dir,
                                                                     tmp_path) -> None:
    import json
    import shutil

    from pagedllm import LLM

    folder = tmp_path / "model"
    shutil.copytree(tiny_hf_model("llama").folder, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "temperature": 0.6, "top_k": 20,
                                                               "max_new_tokens": 3}))
    llm = LLM(str(folder), tokenizer=smollm2_tokenizer_dir, max_model_len=128, num_gpu_blocks_override=32)
    params = llm.get_default_sampling_params()
    assert (params.temperature, params.top_k, params.max_tokens) == (0.6, 20, 3)
    out = llm.generate("in the", use_tqdm=False)  # no params: the model's defaults, as vLLM does
    assert len(out[0].outputs[0].token_ids) <= 3
    neutral = LLM(str(folder), tokenizer=smollm2_tokenizer_dir, max_model_len=128, num_gpu_blocks_override=32,
                  generation_config="vllm").get_default_sampling_params()
    assert (neutral.temperature, neutral.top_k, neutral.max_tokens) == (1.0, 0, 16)
