"""Each architecture against HF on a tiny random checkpoint: prefill of several sequences in one
flattened step, chunked prefill after a cached prefix, and decode steps through the paged cache."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from pagedllm.config import KernelConfig, ModelConfig
from pagedllm.layers.layer_kernels import LayerKernels
from pagedllm.models.loader import load_hf_config, load_model
from tests.helpers.paged_runner import PagedRunner
from tests.helpers.tiny_models import TINY_ARCHS, TinyModel

ATOL = 1e-4


def our_model(tiny: TinyModel, dtype: str = "float32", kernels: LayerKernels | None = None) -> torch.nn.Module:
    hf_config = load_hf_config(tiny.source)
    return load_model(ModelConfig(tiny.folder, None, None, hf_config, dtype, max_model_len=256), kernels=kernels)


@torch.no_grad()
def hf_logits(hf_model: Any, tokens: list[int]) -> torch.Tensor:  # [len(tokens), V]
    return hf_model(torch.tensor([tokens])).logits[0].float()


def make_sequences(vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_prefill_then_decode_matches_hf(arch: str, tiny_hf_model: Any) -> None:
    tiny = tiny_hf_model(arch)
    model = our_model(tiny)
    prompts = make_sequences(model.config.vocab_size, [7, 1, 13, 20], seed=1)
    continuations = make_sequences(model.config.vocab_size, [3, 3, 3, 3], seed=2)
    runner = PagedRunner(model, num_blocks=64, block_size=4)

    prefill = runner.step({i: p for i, p in enumerate(prompts)}, all_logits=True)
    for i, p in enumerate(prompts):
        torch.testing.assert_close(prefill[i], hf_logits(tiny.hf_model, p), atol=ATOL, rtol=0)
    for k in range(3):
        decode = runner.step({i: [c[k]] for i, c in enumerate(continuations)})
        for i, (p, c) in enumerate(zip(prompts, continuations)):
            expected = hf_logits(tiny.hf_model, p + c[:k + 1])[-1]
            torch.testing.assert_close(decode[i], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["llama3", "qwen3"])
def test_chunked_prefill_mixed_with_decode(arch: str, tiny_hf_model: Any) -> None:
    tiny = tiny_hf_model(arch)
    model = our_model(tiny)
    a, b = make_sequences(model.config.vocab_size, [30, 9], seed=3)
    runner = PagedRunner(model, num_blocks=64, block_size=8, seed=5)
    runner.step({0: a[:11], 1: b[:8]})
    # One step: a's next chunk after an 11-token cached prefix (not block aligned) + b decoding.
    out = runner.step({0: a[11:25], 1: b[8:9]}, all_logits=True)
    torch.testing.assert_close(out[0], hf_logits(tiny.hf_model, a[:25])[11:], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[1][-1], hf_logits(tiny.hf_model, b)[-1], atol=ATOL, rtol=0)
    out = runner.step({0: a[25:]})
    torch.testing.assert_close(out[0], hf_logits(tiny.hf_model, a)[-1], atol=ATOL, rtol=0)


def test_sharded_checkpoint_loads(tiny_hf_model: Any) -> None:
    tiny = tiny_hf_model("qwen2", sharded=True)
    import os

    assert os.path.isfile(os.path.join(tiny.folder, "model.safetensors.index.json"))
    model = our_model(tiny)
    prompt = make_sequences(model.config.vocab_size, [10])[0]
    out = PagedRunner(model).step({0: prompt})
    torch.testing.assert_close(out[0], hf_logits(tiny.hf_model, prompt)[-1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("dtype,torch_dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_half_precision_loads_and_runs(arch: str, dtype: str, torch_dtype: torch.dtype, tiny_hf_model: Any) -> None:
    tiny = tiny_hf_model(arch)
    model = our_model(tiny, dtype)
    assert all(p.dtype == torch_dtype for p in model.parameters())
    prompts = make_sequences(model.config.vocab_size, [9, 5], seed=4)
    runner = PagedRunner(model)
    out = runner.step({0: prompts[0], 1: prompts[1]})
    out.update(runner.step({0: [7], 1: [8]}))
    for i, p in enumerate(prompts):
        assert out[i].dtype == torch.float32 and torch.isfinite(out[i]).all()
    expected = hf_logits(tiny.hf_model, prompts[1] + [8])[-1]
    # Half precision: close to the fp32 reference relative to the logits' spread.
    assert (out[1] - expected).abs().max() < 0.05 * expected.abs().max() + 0.05


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_folded_norms_match_hf(arch: str, tiny_hf_model: Any) -> None:
    """The CUDA path's norm folding (models/norm_folding.py), run here on its torch fallbacks:
    norm weights folded into qkv (unless it has a bias) and gate_up, the scale applied after, the
    residual accumulated in place. Prefill, a chunk after a cached prefix, and decode against HF."""
    from pagedllm.models.common import DecoderAttention, GatedMLP
    from pagedllm.models.norm_folding import FoldedRMSNorm, fold_norms
    from pagedllm.platforms.cpu import CpuPlatform

    # Plain weights, as the fold rewrites them on a GPU; the loader folds where the kernels say.
    kernels = dataclasses.replace(CpuPlatform().layer_kernels(KernelConfig(cpu_gemm="torch")), fold_norms=True)
    tiny = tiny_hf_model(arch)
    model = our_model(tiny, kernels=kernels)
    layer = model.model.layers[0]
    # a bias keeps its norm, and so does latent attention (MLA: two projections read it)
    foldable = isinstance(layer.self_attn, DecoderAttention) and layer.self_attn.qkv_proj.bias is None
    assert isinstance(layer.input_layernorm, FoldedRMSNorm) == foldable
    # a mixture of experts keeps its norm (the router reads the normalised rows too)
    assert isinstance(layer.post_attention_layernorm, FoldedRMSNorm) == isinstance(layer.mlp, GatedMLP)
    if any(isinstance(m, FoldedRMSNorm) for m in model.modules()):
        with pytest.raises(ValueError, match="already folded"):
            fold_norms(model)
    a, b = make_sequences(model.config.vocab_size, [30, 9], seed=3)
    runner = PagedRunner(model, num_blocks=64, block_size=8, seed=5)
    first = runner.step({0: a[:11], 1: b[:8]}, all_logits=True)
    torch.testing.assert_close(first[1], hf_logits(tiny.hf_model, b[:8]), atol=ATOL, rtol=0)
    out = runner.step({0: a[11:25], 1: b[8:9]}, all_logits=True)
    torch.testing.assert_close(out[0], hf_logits(tiny.hf_model, a[:25])[11:], atol=ATOL, rtol=0)
    for k in range(3):
        decode = runner.step({0: [a[25 + k]], 1: [7 + k]})
    torch.testing.assert_close(decode[0], hf_logits(tiny.hf_model, a[:28])[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(decode[1], hf_logits(tiny.hf_model, b + [7, 8, 9])[-1], atol=ATOL, rtol=0)
