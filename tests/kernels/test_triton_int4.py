"""INT4 weight-only kernels (kernels/triton/int4_gemm.py, the skinny GEMM's int4 tiles) against
the torch dequantization of kernels/quant_reference.py; and the CUDA method as the platform
builds it, loading AWQ and GPTQ tensors (their packings unpacked at load)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.kernels import quant_reference as ref
from pagedllm.kernels.triton.int4_gemm import int4_gemm
from pagedllm.kernels.triton.skinny_gemm import GemvConfig, skinny_gemm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and not got.float().isnan().any()
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def _weight(k: int, n: int, group: int, seed: int, symmetric: bool = False):
    gen = torch.Generator().manual_seed(seed)
    q, s, z = ref.quantize_int4(torch.randn(k, n, generator=gen) / k**0.5, group, symmetric)
    packed, scales, zeros = ref.pack_int4_rows(q), s.to(torch.bfloat16), z.to(torch.bfloat16)
    return packed, scales, zeros, ref.dequantize_int4(packed, scales, zeros, group)


@pytest.mark.parametrize("group", [64, 128])
@pytest.mark.parametrize("m", [20, 70])
def test_int4_gemm_matches_dequantized(group, m):
    packed, scales, zeros, dense = _weight(256, 96, group, m)
    x = torch.randn(m, 256, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    got = int4_gemm(x.to(DEVICE), packed.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), group)
    assert rel_err(got.cpu(), (x.float() @ dense).to(torch.bfloat16)) < 8e-3


@pytest.mark.parametrize("cfg", [GemvConfig(32, 64, 1, num_stages=2), GemvConfig(32, 32, 2, num_stages=2)],
                         ids=["unsplit", "split2"])
def test_skinny_int4_plain_accumulate_gated(cfg):
    group, rows = 64, 5
    packed, scales, zeros, dense = _weight(256, 128, group, 7)
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    dev = {k: v.to(DEVICE) for k, v in (("w", packed), ("s", scales), ("z", zeros))}
    kw = dict(weight_scale=dev["s"], weight_zeros=dev["z"], scale_block=group)
    want = x.float() @ dense
    assert rel_err(skinny_gemm(x.to(DEVICE), dev["w"], cfg, **kw).cpu(), want.to(torch.bfloat16)) < 8e-3
    residual = torch.randn(rows, 128, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    got = skinny_gemm(x.to(DEVICE), dev["w"], cfg, out=residual.clone().to(DEVICE), accumulate=True, **kw)
    assert rel_err(got.cpu(), (residual.float() + want).to(torch.bfloat16)) < 8e-3
    g, u = want.to(torch.bfloat16).float().chunk(2, dim=-1)
    got = skinny_gemm(x.to(DEVICE), dev["w"], GemvConfig(32, 64, 1, num_stages=2), gated=True, **kw)
    assert rel_err(got.cpu(), (torch.nn.functional.silu(g) * u).to(torch.bfloat16)) < 1.5e-2


@pytest.mark.parametrize("fmt", ["awq", "gptq", "gptq-act-order"])
@pytest.mark.parametrize("rows", [3, 40])
def test_cuda_int4_method_loads_the_format_and_dispatches(fmt, rows):
    from pagedllm.layers.int4_linear import Int4TritonLinearMethod, cuda_int4_method
    from pagedllm.layers.layer_kernels import LayerKernels, OpImpl, use_layer_kernels
    from pagedllm.layers.linear import Linear
    from pagedllm.quantization.int4 import AwqConfig, GptqConfig

    group, k, n = 64, 256, 96
    config = AwqConfig(group_size=group) if fmt == "awq" else GptqConfig(group_size=group, symmetric=False)
    kernels = LayerKernels(ops=OpImpl.TORCH, quant_config=config,
                           linear_method=lambda spec: cuda_int4_method(spec, spec.scheme, "on", False))
    gen = torch.Generator().manual_seed(rows)
    # act-order: features grouped in a permuted order, g_idx naming each one's group
    order = torch.randperm(k, generator=gen) if fmt == "gptq-act-order" else torch.arange(k)
    q_sorted, s, z = ref.quantize_int4((torch.randn(k, n, generator=gen) / k**0.5)[order], group)
    q = torch.empty_like(q_sorted)
    q[order] = q_sorted
    g_idx = torch.empty(k, dtype=torch.int64)
    g_idx[order] = torch.arange(k) // group
    if fmt == "awq":
        tensors = {"qweight": ref.pack_int4_cols(q, awq_order=True), "qzeros": ref.pack_int4_cols(z, awq_order=True)}
    else:  # GPTQ: rows packed, zeros stored minus one
        tensors = {"qweight": ref.pack_int4_rows(q), "qzeros": ref.pack_int4_cols(z - 1), "g_idx": g_idx.int()}
    tensors["scales"] = s.to(torch.float16)
    dense = (q.float() - z.float()[g_idx]) * s.to(torch.float16).float()[g_idx]
    with torch.device(DEVICE), use_layer_kernels(kernels):
        layer = Linear(k, n, bias=False, dtype=torch.bfloat16, prefix="model.layers.0.mlp.down_proj")
    assert isinstance(layer.method, Int4TritonLinearMethod) and layer.method.skinny is not None
    for attr, t in tensors.items():
        layer.load_hf_weight(attr, t.to(DEVICE))
    layer.process_weights_after_loading()
    assert layer.qweight.shape == (k // 8, n) and not hasattr(layer, "weight_q")
    x = torch.randn(rows, k, generator=gen).to(torch.bfloat16)
    assert rel_err(layer(x.to(DEVICE)).cpu(), (x.float() @ dense).to(torch.bfloat16)) < 8e-3


def test_dequantize_kernel_and_the_dense_path_of_large_steps():
    """Steps of DENSE_GEMM_ROWS or more: the weight dequantized by a kernel (the reference's values,
    rounded once), then one dense GEMM."""
    from pagedllm.kernels.triton.int4_gemm import dequantize_int4_weight
    from pagedllm.layers.int4_linear import DENSE_GEMM_ROWS, Int4TritonLinearMethod
    from pagedllm.quantization.int4 import Int4Scheme

    packed, scales, zeros, dense = _weight(128, 64, 64, 11)
    got = dequantize_int4_weight(packed.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), 64, torch.bfloat16)
    assert torch.equal(got.cpu(), dense.to(torch.bfloat16))
    from pagedllm.layers.linear_method import LinearSpec

    method = Int4TritonLinearMethod(LinearSpec(128, 64, False, torch.bfloat16), Int4Scheme("awq", 64), None, False)
    layer = torch.nn.Module()
    layer.qweight, layer.scales, layer.zeros, layer.bias = packed.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), None
    x = torch.randn(DENSE_GEMM_ROWS, 128, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    out = method.apply(layer, x.to(DEVICE))  # type: ignore[arg-type]
    assert rel_err(out.cpu(), (x.float() @ dense).to(torch.bfloat16)) < 8e-3
