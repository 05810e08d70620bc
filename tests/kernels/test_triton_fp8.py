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
