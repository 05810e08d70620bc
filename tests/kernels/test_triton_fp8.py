"""FP8 kernels (kernels/triton/fp8_gemm.py, the skinny GEMM's fp8 weights) against the torch
references of kernels/quant_reference.py: activation quantization (per token, per token and
group, static), the W8A8 GEMM with per-channel and block scales, and weight-only small steps
with their epilogues. Odd shapes: rows, columns and features that no tile divides."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.kernels import quant_reference as ref  # noqa: E402
from pagedllm.kernels.triton.fp8_gemm import fp8_scaled_gemm, quantize_fp8_rows  # noqa: E402
from pagedllm.kernels.triton.skinny_gemm import GemvConfig, skinny_gemm  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and not got.float().isnan().any()
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


@pytest.mark.parametrize("group", [None, 128])
def test_quantize_rows_matches_reference(group):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(7, 300, generator=gen) * 3).to(DEVICE, torch.bfloat16)
    x[2] = 0.0  # an all-zero row keeps a finite scale
    q, s = quantize_fp8_rows(x, group)
    q_ref, s_ref = ref.quantize_fp8_rows(x, group)
    torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=0)
    assert torch.equal(q.float(), q_ref.float())


def test_quantize_rows_static_scale():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)).to(DEVICE, torch.bfloat16) * 100
    static = torch.tensor([0.05], device=DEVICE)
    q, s = quantize_fp8_rows(x, None, static)
    q_ref, s_ref = ref.quantize_fp8_rows(x, None, static)
    assert s.shape == (4, 1) and torch.equal(s, s_ref)
    assert q.float().abs().max().item() == ref.FP8_MAX  # clamped, not inf
    assert torch.equal(q.float(), q_ref.float())


@pytest.mark.parametrize("block", [None, (128, 128)])
@pytest.mark.parametrize("m", [3, 70])
def test_w8a8_gemm_matches_reference(block, m):
    gen = torch.Generator().manual_seed(m)
    n, k = 200, 320  # neither a multiple of the tiles: masked edges, a partial scale block
    w, w_scale = ref.quantize_fp8_weight(torch.randn(n, k, generator=gen) / k**0.5, block)
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    xq, xs = ref.quantize_fp8_rows(x, None if block is None else block[1])
    want = ref.fp8_scaled_mm(xq, xs, w, w_scale, block, torch.bfloat16)
    got = fp8_scaled_gemm(xq.to(DEVICE), xs.to(DEVICE), w.to(DEVICE), w_scale.to(DEVICE), block, torch.bfloat16)
    assert rel_err(got.cpu(), want) < 8e-3
    # and W8A8 stays close to the unquantized product
    assert rel_err(got.cpu(), (x.float() @ ref.dequantize_fp8(w, w_scale, block).t()).to(torch.bfloat16)) < 0.06


@pytest.mark.parametrize("block", [None, (64, 64)])
@pytest.mark.parametrize("cfg", [GemvConfig(64, 64, 1, num_stages=2), GemvConfig(32, 64, 2, num_stages=2)],
                         ids=["unsplit", "split2"])
def test_skinny_fp8_weight_only(block, cfg):
    gen = torch.Generator().manual_seed(3)
    n, k, rows = 192, 256, 5
    w, w_scale = ref.quantize_fp8_weight(torch.randn(n, k, generator=gen) / k**0.5, block)
    x = torch.randn(rows, k, generator=gen).to(torch.bfloat16)
    dense = ref.dequantize_fp8(w, w_scale, block)
    w_t = w.to(DEVICE).t()  # the checkpoint's [N, K], read as [K, N]
    scale_block = 0 if block is None else block[1]
    got = skinny_gemm(x.to(DEVICE), w_t, cfg, weight_scale=w_scale.to(DEVICE), scale_block=scale_block)
    assert rel_err(got.cpu(), (x.float() @ dense.t()).to(torch.bfloat16)) < 8e-3
    residual = torch.randn(rows, n, generator=gen).to(torch.bfloat16)
    got = skinny_gemm(x.to(DEVICE), w_t, cfg, out=residual.clone().to(DEVICE), accumulate=True,
                      weight_scale=w_scale.to(DEVICE), scale_block=scale_block)
    assert rel_err(got.cpu(), (residual.float() + x.float() @ dense.t()).to(torch.bfloat16)) < 8e-3
    gate_up = skinny_gemm(x.to(DEVICE), w_t, GemvConfig(32, 64, 1, num_stages=2), gated=True,
                          weight_scale=w_scale.to(DEVICE), scale_block=scale_block)
    g, u = (x.float() @ dense.t()).to(torch.bfloat16).float().chunk(2, dim=-1)
    assert rel_err(gate_up.cpu(), (torch.nn.functional.silu(g) * u).to(torch.bfloat16)) < 1.5e-2


@pytest.mark.parametrize("block", [None, (64, 64)])
@pytest.mark.parametrize("rows", [3, 40])
def test_cuda_fp8_method_dispatch(block, rows):
    """The CUDA method as the platform builds it (cuda_fp8_method): steps of at most 16 rows
    through the skinny GEMM, larger ones through the W8A8 GEMM; plain, added into a residual, and
    gated, each against the dequantized weight."""
    from pagedllm.layers.activation import SiluAndMul
    from pagedllm.layers.fp8_linear import Fp8TritonLinearMethod, cuda_fp8_method
    from pagedllm.layers.layer_kernels import LayerKernels, OpImpl, use_layer_kernels
    from pagedllm.layers.linear import Linear
    from pagedllm.quantization.fp8 import Fp8Config

    kernels = LayerKernels(ops=OpImpl.TORCH, quant_config=Fp8Config(block=block),
                           linear_method=lambda spec: cuda_fp8_method(spec, spec.scheme, "on", False))
    gen = torch.Generator().manual_seed(rows)
    k, n = 256, 192
    w = torch.randn(n, k, generator=gen) / k**0.5
    q, s = ref.quantize_fp8_weight(w, block)
    dense = ref.dequantize_fp8(q, s, block)
    x = torch.randn(rows, k, generator=gen).to(DEVICE, torch.bfloat16)
    with torch.device(DEVICE), use_layer_kernels(kernels):
        plain = Linear(k, n, bias=False, dtype=torch.bfloat16, prefix="model.layers.0.mlp.down_proj")
        gated = Linear(k, n, bias=False, dtype=torch.bfloat16, gated=True, prefix="model.layers.0.mlp.gate_proj")
    for layer in (plain, gated):
        assert isinstance(layer.method, Fp8TritonLinearMethod) and layer.method.skinny is not None
        layer.load_hf_weight("weight", q.to(DEVICE))
        layer.load_hf_weight(layer.method.scale_attr, s.to(DEVICE))
        layer.process_weights_after_loading()
    want = x.float().cpu() @ dense.t()
    tol = 8e-3 if rows <= 16 else 0.06  # W8A8 quantizes the activations too
    assert rel_err(plain(x).cpu(), want.to(torch.bfloat16)) < tol
    residual = torch.randn(rows, n, generator=gen).to(torch.bfloat16)
    got = plain.accumulate_(residual.clone().to(DEVICE), x)
    assert rel_err(got.cpu(), (residual.float() + want).to(torch.bfloat16)) < tol
    g, u = want.to(torch.bfloat16).float().chunk(2, dim=-1)
    act = SiluAndMul()
    got = gated.forward_gated(x, lambda t, _: act(t))
    assert rel_err(got.cpu(), (torch.nn.functional.silu(g) * u).to(torch.bfloat16)) < 2 * tol
