"""iter_gguf_weights on a GGUF we write ourselves from a tiny HF llama: F32, F16, BF16 and Q8_0
tensors, llama.cpp's q/k row permutation, and the names mapped back to HF's."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from pagedllm.models.gguf_loader import gguf_to_hf_name, iter_gguf_weights

gguf = pytest.importorskip("gguf")

_HF_TO_GGUF = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def to_gguf_name(hf_name: str) -> str:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, attr = rest.rsplit(".", 1)
    return f"blk.{layer}.{_HF_TO_GGUF[module]}.{attr}"


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    # convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: str, state: dict[str, torch.Tensor], cfg: Any) -> dict[str, str]:
    """Write `state` as a llama GGUF; returns hf_name -> storage type used."""
    writer = gguf.GGUFWriter(path, "llama")
    kinds = ["F32", "F16", "BF16", "Q8_0"]
    used: dict[str, str] = {}
    for i, (name, tensor) in enumerate(sorted(state.items())):
        data = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            data = llama_cpp_permute(data, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = llama_cpp_permute(data, cfg.num_key_value_heads)
        kind = "F32" if data.ndim == 1 else kinds[i % len(kinds)]
        used[name] = kind
        if kind == "F32":
            writer.add_tensor(to_gguf_name(name), np.ascontiguousarray(data))
        elif kind == "F16":
            writer.add_tensor(to_gguf_name(name), data.astype(np.float16))
        else:
            qtype = getattr(gguf.GGMLQuantizationType, kind)
            writer.add_tensor(to_gguf_name(name), gguf.quants.quantize(data, qtype),
                              raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return used


def test_roundtrip_all_storage_types(tiny_hf_model: Any, tmp_path: Any) -> None:
    tiny = tiny_hf_model("llama3")  # untied: has lm_head -> output.weight
    state = {k: v for k, v in tiny.hf_model.state_dict().items()}
    path = str(tmp_path / "tiny.gguf")
    used = write_gguf(path, state, tiny.hf_model.config)
    assert {"F16", "BF16", "Q8_0"} <= set(used.values())
    loaded = dict(iter_gguf_weights(path, tiny.hf_model.config))
    assert set(loaded) == set(state)
    for name, ref in state.items():
        got = loaded[name].float()
        if used[name] in ("F32",):
            assert torch.equal(got, ref), name
        elif used[name] == "F16":
            torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-3)
        elif used[name] == "BF16":
            torch.testing.assert_close(got, ref, atol=1e-2, rtol=1e-2)
        else:  # Q8_0: 8-bit blocks of 32
            assert (got - ref).abs().max() <= ref.abs().max() / 100, name


def test_name_mapping() -> None:
    assert gguf_to_hf_name("blk.12.attn_k.bias") == "model.layers.12.self_attn.k_proj.bias"
    assert gguf_to_hf_name("blk.0.attn_q_norm.weight") == "model.layers.0.self_attn.q_norm.weight"
    assert gguf_to_hf_name("output.weight") == "lm_head.weight"
    assert gguf_to_hf_name("rope_freqs.weight") is None
    with pytest.raises(ValueError, match="blk.0.ffn_gate_exps.weight"):
        gguf_to_hf_name("blk.0.ffn_gate_exps.weight")
