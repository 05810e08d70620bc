"""load_format="dummy": a model shape with random weights built in place runs through the engine."""
from __future__ import annotations

from pagedllm import LLM, SamplingParams
from pagedllm.bench.model_folders import LLAMA3_8B, write_model_folder

TINY_LLAMA = dict(LLAMA3_8B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512, max_position_embeddings=256)


def test_dummy_model_folder_generates(tmp_path):
    folder = write_model_folder(str(tmp_path / "tiny"), TINY_LLAMA)
    llm = LLM(folder, load_format="dummy", device="cpu", dtype="float32", kv_cache_memory=8 << 20)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": [5, 6, 7, 8]}, "t9 t10 t11"], params, use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [6, 6]
    assert all(0 <= t < 512 for o in outs for t in o.outputs[0].token_ids)
    # the same seed builds the same weights: greedy outputs repeat in a second engine
    again = LLM(folder, load_format="dummy", device="cpu", dtype="float32", kv_cache_memory=8 << 20)
    assert again.generate([{"prompt_token_ids": [5, 6, 7, 8]}], params, use_tqdm=False)[0].outputs[0].token_ids \
        == outs[0].outputs[0].token_ids
