"""Quantized safetensors checkpoints over two tensor-parallel ranks: each rank cuts its part of the
packed and scaled tensors by their layouts (FP8 per channel and in blocks, AWQ and GPTQ words and
groups), and the greedy tokens are HF's on the dequantized weights; a group that a rank's part
would cut in two is refused at start."""
from __future__ import annotations

import pytest

from pagedllm import LLM, SamplingParams
from tests.helpers.hf_oracle import hf_greedy
from tests.helpers.quantized_checkpoints import (
    write_compressed_tensors_checkpoint,
    write_fp8_checkpoint,
    write_int4_checkpoint,
)

PROMPT = [1, 44, 99, 7, 250, 13, 77, 78]
# The tiny models' down projection reads 96 features: 48 a rank, so groups and blocks of 16 split.
WRITERS = {
    "fp8-channel": lambda tiny, folder: write_fp8_checkpoint(tiny, folder, "channel"),
    "fp8-block": lambda tiny, folder: write_fp8_checkpoint(tiny, folder, "block", block=(16, 16)),
    "awq": lambda tiny, folder: write_int4_checkpoint(tiny, folder, "awq", group=16),
    "gptq": lambda tiny, folder: write_int4_checkpoint(tiny, folder, "gptq", group=16),
}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_two_ranks_run_a_quantized_checkpoint_as_hf_runs_it_dequantized(fmt, tiny_hf_model, smollm2_tokenizer_dir,
                                                                        tmp_path):
    hf = WRITERS[fmt](tiny_hf_model("qwen2"), str(tmp_path))
    llm = LLM(str(tmp_path), tokenizer=smollm2_tokenizer_dir, max_model_len=128, num_gpu_blocks_override=32,
              tensor_parallel_size=2)
    out = llm.generate([{"prompt_token_ids": PROMPT}], SamplingParams(max_tokens=10, temperature=0, ignore_eos=True),
                       use_tqdm=False)
    assert out[0].outputs[0].token_ids == hf_greedy(hf, PROMPT, 10, eos_ids=set())
    llm.llm_engine.engine_core.shutdown()


def test_groups_a_rank_would_cut_are_refused(tiny_hf_model, smollm2_tokenizer_dir, tmp_path):
    write_compressed_tensors_checkpoint(tiny_hf_model("qwen2"), str(tmp_path), "w4a16")  # groups of 32
    with pytest.raises(ValueError, match=r"An INT4 layer of 48 inputs .*tensor-parallel rank's part.* groups of 32"):
        LLM(str(tmp_path), tokenizer=smollm2_tokenizer_dir, max_model_len=128, tensor_parallel_size=2)
    write_fp8_checkpoint(tiny_hf_model("qwen2"), str(tmp_path / "fp8"), "block")  # blocks of 32
    # either rank's error may arrive first: rank 0 names features 0..48, rank 1 48..96
    with pytest.raises(ValueError, match=r"weight_scale_inv of RowParallelLinear: a rank's input features "
                                         r"(0\.\.48|48\.\.96) do not split its entries of 32 features"):
        LLM(str(tmp_path / "fp8"), tokenizer=smollm2_tokenizer_dir, max_model_len=128, tensor_parallel_size=2)
