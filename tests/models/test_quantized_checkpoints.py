"""Quantized checkpoints: FP8 (quant_method "fp8": per-tensor, per-channel, block scales, static
input scales) and INT4 (AWQ, GPTQ) load and compute what their numbers mean: against HF transformers on the same weights
dequantized, through the paged cache (prefill and decode). On the CPU the methods dequantize
per call, so the logits match HF's as closely as an unquantized model's do. Online quantization
(quantization="fp8" of an unquantized checkpoint) computes what a per-channel checkpoint of the
same weights does."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pagedllm.config import ModelConfig
from pagedllm.layers.fp8_linear import Fp8LinearMethod
from pagedllm.models.loader import load_hf_config, load_model
from pagedllm.models.source import ModelSource
from tests.helpers.paged_runner import PagedRunner
from tests.helpers.quantized_checkpoints import (
    CT_SCHEMES,
    FP8_SCHEMES,
    INT4_FORMATS,
    write_compressed_tensors_checkpoint,
    write_fp8_checkpoint,
    write_int4_checkpoint,
)

ATOL = 1e-4


def _load(folder: str, quantization: str | None) -> torch.nn.Module:
    hf_config = load_hf_config(ModelSource(folder))
    return load_model(ModelConfig(folder, None, None, hf_config, "float32", max_model_len=256,
                                  quantization=quantization))


def _logits(hf_model: Any, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(torch.tensor([tokens])).logits[0].float()


def _check_prefill_and_decode(model: torch.nn.Module, hf: Any, more: tuple[int, ...] = (77, 12)) -> None:
    """A prompt's logits, then each decode step's, through the paged cache, against HF's."""
    prompt = [5, 17, 99, 3, 250, 41, 8]
    runner = PagedRunner(model)
    out = runner.step({0: prompt}, all_logits=True)
    torch.testing.assert_close(out[0], _logits(hf, prompt), atol=ATOL, rtol=0)
    for i, token in enumerate(more):
        out = runner.step({0: [token]})
        torch.testing.assert_close(out[0], _logits(hf, prompt + list(more[:i + 1]))[-1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("scheme", FP8_SCHEMES)
def test_fp8_checkpoint_matches_hf_on_dequantized_weights(scheme, tiny_hf_model, tmp_path):
    tiny = tiny_hf_model("qwen2" if scheme == "static" else "llama")  # qwen2: q/k/v biases
    folder = str(tmp_path / scheme)
    hf = write_fp8_checkpoint(tiny, folder, scheme)
    model = _load(folder, "fp8")
    methods = [m.method for m in model.modules() if hasattr(m, "method")]
    assert sum(isinstance(m, Fp8LinearMethod) for m in methods) == 4 * model.config.num_hidden_layers
    assert model.model.layers[0].self_attn.qkv_proj.weight.dtype == torch.float8_e4m3fn
    _check_prefill_and_decode(model, hf)


def test_online_fp8_equals_a_per_channel_checkpoint(tiny_hf_model, tmp_path):
    tiny = tiny_hf_model("llama")
    folder = str(tmp_path / "channel")
    write_fp8_checkpoint(tiny, folder, "channel")
    online, stored = _load(tiny.folder, "fp8"), _load(folder, "fp8")
    proj = online.model.layers[1].mlp.gate_up_proj
    assert proj.weight.dtype == torch.float8_e4m3fn and proj.weight_scale.shape == (proj.out_features,)
    prompt = [9, 4, 200, 31, 7]
    a = PagedRunner(online).step({0: prompt}, all_logits=True)[0]
    b = PagedRunner(stored).step({0: prompt}, all_logits=True)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scheme", ["block", "tensor"])
def test_fp8_experts_match_hf_on_dequantized_weights(scheme, tiny_hf_model, tmp_path):
    """Qwen3-MoE-FP8 style: every expert's projections fp8 (16 x 16 blocks here: the tiny experts
    are 48 wide), the router left in full precision."""
    tiny = tiny_hf_model("qwen3_moe")
    folder = str(tmp_path / scheme)
    hf = write_fp8_checkpoint(tiny, folder, scheme, block=(16, 16))
    model = _load(folder, "fp8")
    experts = model.model.layers[1].mlp.experts
    assert experts.w13.dtype == torch.float8_e4m3fn and model.model.layers[1].mlp.gate.weight_t.dtype == torch.float32
    _check_prefill_and_decode(model, hf)


def test_online_fp8_quantizes_experts_and_leaves_the_router(tiny_hf_model):
    model = _load(tiny_hf_model("qwen3_moe").folder, "fp8")
    moe = model.model.layers[1].mlp
    assert moe.experts.w13.dtype == torch.float8_e4m3fn and moe.experts.w13_scale.shape == moe.experts.w13.shape[:2]
    assert moe.gate.weight_t.dtype == torch.float32


@pytest.mark.parametrize("fmt", INT4_FORMATS)
def test_int4_experts_match_hf_on_dequantized_weights(fmt, tiny_hf_model, tmp_path):
    """AWQ / GPTQ mixtures of experts (Qwen3-MoE-AWQ style): every expert int4 in groups of 16
    (the tiny experts are 48 wide), unpacked per expert at load."""
    tiny = tiny_hf_model("qwen3_moe")
    folder = str(tmp_path / fmt)
    hf = write_int4_checkpoint(tiny, folder, fmt, group=16)
    model = _load(folder, fmt)
    assert model.model.layers[1].mlp.experts.w13_qweight.shape == (6, 64 // 8, 96)
    _check_prefill_and_decode(model, hf)


def test_block_scales_a_shard_straddles_are_a_clear_error(tiny_hf_model, tmp_path):
    folder = str(tmp_path / "qwen3")  # head_dim 24: v starts at row 144, inside a 32-row block
    write_fp8_checkpoint(tiny_hf_model("qwen3"), folder, "block")
    with pytest.raises(ValueError, match="starts at row 144, inside a 32-row block"):
        _load(folder, "fp8")


@pytest.mark.parametrize("fmt", INT4_FORMATS)
def test_int4_checkpoint_matches_hf_on_dequantized_weights(fmt, tiny_hf_model, tmp_path):
    tiny = tiny_hf_model("qwen2" if fmt == "gptq" else "llama")  # qwen2: q/k/v biases beside int4 weights
    folder = str(tmp_path / fmt)
    hf = write_int4_checkpoint(tiny, folder, fmt)
    model = _load(folder, fmt)
    assert model.model.layers[0].mlp.down_proj.qweight.dtype == torch.int32
    _check_prefill_and_decode(model, hf)


def test_act_order_gptq_matches_hf_on_dequantized_weights(tiny_hf_model, tmp_path):
    """GPTQ desc_act=true: each layer's input features grouped in a permuted order (one order for
    q/k/v and one for gate/up, which share their input); the rows sorted by group at load and the
    activations gathered into that order each step."""
    tiny = tiny_hf_model("llama")
    folder = str(tmp_path / "gptq_act_order")
    hf = write_int4_checkpoint(tiny, folder, "gptq", act_order=True)
    model = _load(folder, "gptq")
    assert model.model.layers[0].mlp.down_proj.act_order.shape == (96,)
    _check_prefill_and_decode(model, hf)


@pytest.mark.parametrize("kind", CT_SCHEMES)
def test_compressed_tensors_checkpoint_matches_hf_on_its_decompressed_weights(kind, tiny_hf_model, tmp_path):
    """Written and decompressed by the compressed-tensors library itself: its format is its own."""
    tiny = tiny_hf_model("llama")
    folder = str(tmp_path / kind)
    hf = write_compressed_tensors_checkpoint(tiny, folder, kind)
    model = _load(folder, "compressed-tensors")
    _check_prefill_and_decode(model, hf, more=(77,))


def test_fp8_deepseek_with_latent_attention(tiny_hf_model, tmp_path):
    """DeepSeek-V3 FP8 style: every projection fp8 (per-tensor here: the tiny latent and experts are
    not multiples of a 16-row block), the latent up-projection dequantized at load for the absorbed
    form, the fp8 experts through the MoE method."""
    tiny = tiny_hf_model("deepseek_v3")
    folder = str(tmp_path / "dsv3")
    hf = write_fp8_checkpoint(tiny, folder, "tensor")
    model = _load(folder, "fp8")
    assert model.model.layers[1].mlp.experts.w13.dtype == torch.float8_e4m3fn
    _check_prefill_and_decode(model, hf)


def test_kv_cache_scales_reach_the_attention_layers(tiny_hf_model, tmp_path):
    """A checkpoint's calibrated K/V cache scales (vLLM's k_scale / v_scale, AutoFP8's
    k_proj.output_scale) go to their layer's attention, for an fp8 KV cache; a float32 cache
    ignores them (the logits stay HF's)."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "fp8"
    hf = write_fp8_checkpoint(tiny_hf_model("llama"), str(folder), "channel")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.layers.0.self_attn.k_scale"] = torch.tensor(2.0)
    tensors["model.layers.0.self_attn.v_scale"] = torch.tensor(0.5)
    tensors["model.layers.1.self_attn.k_proj.output_scale"] = torch.tensor([3.0])
    save_file(tensors, str(folder / "model.safetensors"))
    model = _load(str(folder), "fp8")
    assert model.model.layers[0].self_attn.attn.kv_scales == (2.0, 0.5)
    assert model.model.layers[1].self_attn.attn.kv_scales == (3.0, 1.0)
    _check_prefill_and_decode(model, hf, more=(77,))
