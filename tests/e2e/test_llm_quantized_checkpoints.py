"""A quantized safetensors checkpoint through the offline API: its format detected from its
config, its greedy tokens those of HF transformers on the same weights dequantized."""
from __future__ import annotations

import pytest

from tests.helpers.hf_oracle import hf_greedy
from tests.helpers.quantized_checkpoints import write_fp8_checkpoint, write_int4_checkpoint


@pytest.mark.parametrize("fmt", ["fp8", "awq"])
def test_llm_runs_a_quantized_checkpoint_as_hf_runs_its_dequantized_weights(fmt, tiny_hf_model, smollm2_tokenizer_dir,
                                                                            tmp_path):
    from pagedllm import LLM, SamplingParams

    folder = str(tmp_path / fmt)
    write = write_int4_checkpoint if fmt == "awq" else lambda t, f, _: write_fp8_checkpoint(t, f, "channel")
    hf = write(tiny_hf_model("llama"), folder, fmt)
    llm = LLM(folder, tokenizer=smollm2_tokenizer_dir, max_model_len=128, num_gpu_blocks_override=32)
    assert llm.llm_engine.config.model_config.quantization == fmt
    prompt = [1, 44, 99, 7, 250, 13]
    out = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True),
                       use_tqdm=False)
    assert out[0].outputs[0].token_ids == hf_greedy(hf, prompt, 8, eos_ids=set())
