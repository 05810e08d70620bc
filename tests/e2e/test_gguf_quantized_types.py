"""A small random-weight llama written as a GGUF of each supported type runs on the quantized
path, close to the same file dequantized at load (`quantization="none"`, the HF-exact path); a
type the kernels do not run is a clear error. Mixed files are covered by the default model's own
(Q4_1 with a Q8_0 embedding)."""
from __future__ import annotations

import numpy as np
import pytest

from pagedllm import LLM, SamplingParams
from tests.helpers.tiny_gguf import T, write_tiny_llama

QUANTIZED = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
PROMPT = [[1, *range(40, 88)], [1, 300, 301, 7, 9, 200]]


def _run(path: str, tokenizer: str, quantization: str) -> list:
    llm = LLM(path, tokenizer=tokenizer, dtype="float32", quantization=quantization, max_model_len=256,
              kv_cache_memory=16 << 20)
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, prompt_logprobs=0)
    return llm.generate([{"prompt_token_ids": p} for p in PROMPT], params, use_tqdm=False)


def _prompt_logprob_gap(got: list, ref: list) -> float:
    """Mean |logprob difference| of the prompt tokens, pooled over the prompts."""
    gaps = []
    for g, r in zip(got, ref):
        lp_got = np.array([next(iter(d.values())).logprob for d in g.prompt_logprobs[1:]])
        lp_ref = np.array([next(iter(d.values())).logprob for d in r.prompt_logprobs[1:]])
        assert np.isfinite(lp_got).all()
        gaps.append(np.abs(lp_got - lp_ref))
    return float(np.concatenate(gaps).mean())


@pytest.mark.parametrize("qtype", [*QUANTIZED, T.F16, T.BF16], ids=lambda t: t.name)
def test_tiny_model_of_each_type_runs_quantized(qtype, smollm2_tokenizer_dir, tmp_path):
    path = str(tmp_path / f"tiny-{qtype.name}.gguf")
    write_tiny_llama(path, qtype)
    got, ref = _run(path, smollm2_tokenizer_dir, "gguf"), _run(path, smollm2_tokenizer_dir, "none")
    assert all(len(g.outputs[0].token_ids) == 8 for g in got)
    # int8 activations against float32 ones: a few hundredths of a nat per token on these weights
    assert _prompt_logprob_gap(got, ref) < 0.05, qtype.name


def test_a_mixed_file_runs_each_tensor_as_stored(smollm2_tokenizer_dir, tmp_path):
    """As a Q4_K_M file: the q/k/v shards of one merged layer in three types, gate and up in two,
    a float down projection and a K-quant embedding (tied: the LM head too)."""
    path = str(tmp_path / "tiny-mixed.gguf")
    write_tiny_llama(path, T.Q4_K, types={"attn_k.weight": T.Q5_0, "attn_v.weight": T.Q6_K,
                                          "ffn_up.weight": T.Q8_0, "ffn_down.weight": T.F16,
                                          "token_embd.weight": T.Q6_K})
    got, ref = _run(path, smollm2_tokenizer_dir, "gguf"), _run(path, smollm2_tokenizer_dir, "none")
    assert _prompt_logprob_gap(got, ref) < 0.05


def test_a_merged_layer_of_float_and_quantized_shards_is_refused(smollm2_tokenizer_dir, tmp_path):
    path = str(tmp_path / "tiny-half-float.gguf")
    write_tiny_llama(path, T.Q4_0, types={"attn_v.weight": T.F16})
    with pytest.raises(ValueError, match=r"mixes quantized and float shards.*quantization='none'"):
        LLM(path, tokenizer=smollm2_tokenizer_dir, dtype="float32", max_model_len=256, kv_cache_memory=16 << 20)
    assert len(_run(path, smollm2_tokenizer_dir, "none")) == len(PROMPT)  # dequantized, it runs


def test_unsupported_type_names_the_tensor_and_the_supported_types(smollm2_tokenizer_dir, tmp_path):
    path = str(tmp_path / "tiny-iq2.gguf")
    write_tiny_llama(path, T.Q4_0, odd_tensor=("blk.1.ffn_up.weight", T.IQ2_XXS))
    with pytest.raises(ValueError, match=r"blk\.1\.ffn_up\.weight.*IQ2_XXS.*supported: .*Q4_K"):
        LLM(path, tokenizer=smollm2_tokenizer_dir, dtype="float32", max_model_len=256, kv_cache_memory=16 << 20)
