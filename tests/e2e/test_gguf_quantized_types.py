"""A small random-weight llama written as a GGUF of each supported type runs on the quantized
path, close to the same file dequantized at load (`quantization="none"`, the HF-exact path); a
type the kernels do not run is a clear error. Mixed files are covered by the default model's own
(Q4_1 with a Q8_0 embedding)."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from pagedllm import LLM, SamplingParams

T = gguf.GGMLQuantizationType
QUANTIZED = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 512, 256, 512, 2, 4, 2  # K-quant rows are 256 wide
PROMPT = [[1, *range(40, 88)], [1, 300, 301, 7, 9, 200]]


def _k_blocks(qtype: T, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Valid K-quant blocks (gguf-py quantizes none of these types): random quant and scale bytes,
    the fp16 super-block scales (d, and dmin where the type has one) at ggml's offsets, rescaled
    so the weights' spread is that of the other types' (0.08)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    offsets = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}[qtype]
    d = rng.uniform(0.5, 1.5, size=(blocks.shape[0], len(offsets))).astype(np.float32)
    for scale in (1.0, 0.08 / gguf.quants.dequantize(_with_scales(blocks, offsets, d), qtype).std()):
        d = (d * scale).astype(np.float16).astype(np.float32)
    return _with_scales(blocks, offsets, d).reshape(rows, cols // block * size)


def _with_scales(blocks: np.ndarray, offsets: list[int], d: np.ndarray) -> np.ndarray:
    for i, at in enumerate(offsets):
        blocks[:, at:at + 2] = d[:, i].astype(np.float16).view(np.uint8).reshape(-1, 2)
    return blocks


def _weight(qtype: T, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    if gguf.GGML_QUANT_SIZES[qtype][0] == 256:
        return _k_blocks(qtype, rows, cols, rng)
    return gguf.quants.quantize((rng.standard_normal((rows, cols)) * 0.08).astype(np.float32), qtype)


def write_tiny_llama(path: str, qtype: T, seed: int = 0, odd_tensor: tuple[str, T] | None = None,
                     types: dict[str, T] | None = None) -> None:
    """A 2-layer llama GGUF (tied embedding) whose matrices are all stored as `qtype`, except those
    whose name ends with a key of `types` (stored as its value); with `odd_tensor`, that tensor is
    stored as another type (random bytes of its size)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(VOCAB)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    head = HIDDEN // HEADS
    shapes = {"token_embd.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        per_layer = {"attn_q": (HEADS * head, HIDDEN), "attn_k": (KV_HEADS * head, HIDDEN),
                     "attn_v": (KV_HEADS * head, HIDDEN), "attn_output": (HIDDEN, HIDDEN),
                     "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN)}
        shapes.update({f"blk.{i}.{name}.weight": shape for name, shape in per_layer.items()})
    for name, (rows, cols) in shapes.items():
        if odd_tensor is not None and name == odd_tensor[0]:
            block, size = gguf.GGML_QUANT_SIZES[odd_tensor[1]]
            data = rng.integers(0, 256, size=(rows, cols // block * size), dtype=np.uint8)
            w.add_tensor(name, data, raw_dtype=odd_tensor[1])
        else:
            kind = next((t for suffix, t in (types or {}).items() if name.endswith(suffix)), qtype)
            if kind in (T.F16, T.BF16, T.F32):
                data32 = (rng.standard_normal((rows, cols)) * 0.08).astype(np.float32)
                w.add_tensor(name, gguf.quants.quantize(data32, kind), raw_dtype=kind)
            else:
                w.add_tensor(name, _weight(kind, rows, cols, rng), raw_dtype=kind)
    for i in range(LAYERS):
        for norm in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{norm}.weight", (rng.uniform(0.5, 1.5, HIDDEN)).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


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
