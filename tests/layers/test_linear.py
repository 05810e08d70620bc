"""The packed CPU linear paths (our AVX-512 GEMM over panels, and oneDNN) equal the plain one."""
from __future__ import annotations

import pytest
import torch

from pagedllm.kernels.cpu import avx512_kernels, pack_linear_f32
from pagedllm.layers.embedding import LMHead
from pagedllm.layers.linear import Linear, MergedLinear, cpu_gemm_mode

MODES = ["pagedllm", "onednn"]


def _filled(layer: Linear, seed: int) -> Linear:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight_t.copy_(torch.randn(layer.weight_t.shape, generator=gen))
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    return layer


@pytest.fixture(params=MODES)
def gemm_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PAGEDLLM_CPU_GEMM", request.param)
    if cpu_gemm_mode(torch.empty(1)) != request.param:
        pytest.skip(f"no {request.param} GEMM on this machine")
    return request.param


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("num_tokens", [1, 7, 13, 64, 300])  # 13: a row block past 12; 300: two row chunks
@pytest.mark.parametrize("out_features", [160, 45])  # 45: a panel with 13 columns past the 32
def test_packed_equals_plain(gemm_mode, bias, num_tokens, out_features):
    layer = _filled(Linear(96, out_features, bias=bias, dtype=torch.float32), 0)
    x = torch.randn(num_tokens, 96)
    expected = layer(x)
    assert layer.pack_for_cpu() and layer.weight_t.numel() == 0
    assert (layer.panels is not None) == (gemm_mode == "pagedllm")
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_panel_gemm_takes_row_strided_and_3d_inputs(gemm_mode):
    layer = _filled(Linear(64, 70, bias=True, dtype=torch.float32), 3)
    wide = torch.randn(9, 200)
    x = wide[:, 10:74]  # rows 200 apart, a view like q out of a fused qkv output
    expected = layer(x.contiguous())
    layer.pack_for_cpu()
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    x3 = torch.randn(2, 5, 64)
    torch.testing.assert_close(layer(x3), x3 @ layer_weight(layer).t() + layer.bias, rtol=1e-5, atol=1e-5)


def layer_weight(layer: Linear) -> torch.Tensor:
    """The [out, in] weight back out of the panels or the oneDNN packing (via an identity input)."""
    eye = torch.eye(layer.in_features)
    bias = layer.bias
    layer.bias = None
    try:
        return layer(eye).t().contiguous()
    finally:
        layer.bias = bias


def test_panel_gemm_rows_do_not_depend_on_the_batch():
    """Each output is one FMA chain over k, whatever the batch: bit-equal rows at 1, 12, 13 and 64."""
    kernels = avx512_kernels()
    if kernels is None:
        pytest.skip("no AVX-512 GEMM here")
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(100, 576, generator=gen)
    panels = pack_linear_f32(weight)
    x = torch.randn(64, 576, generator=gen)
    full = kernels.linear_f32(x, panels, None, 100)
    for rows in (1, 12, 13):
        assert torch.equal(kernels.linear_f32(x[:rows], panels, None, 100), full[:rows])
    assert torch.equal(kernels.linear_f32(x[40:41], panels, None, 100), full[40:41])


def test_packed_merged_and_lm_head(gemm_mode):
    merged = _filled(MergedLinear(64, {"q": 64, "k": 32, "v": 32}, bias=True, dtype=torch.float32), 1)
    head = _filled(LMHead(64, 500, dtype=torch.float32), 2)
    x = torch.randn(5, 64)
    want = [t.clone() for t in merged.split(merged(x))], head(x)
    merged.pack_for_cpu(), head.pack_for_cpu()
    for got, exp in zip(merged.split(merged(x)), want[0]):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)
    assert head(x).dtype == torch.float32
    torch.testing.assert_close(head(x), want[1], rtol=1e-5, atol=1e-5)


def test_bfloat16_takes_onednn_and_packing_can_be_disabled(monkeypatch):
    if cpu_gemm_mode(torch.empty(1)) is None:
        pytest.skip("no packed GEMM here")
    assert cpu_gemm_mode(torch.empty(1, dtype=torch.bfloat16)) == "onednn"
    monkeypatch.setenv("PAGEDLLM_CPU_GEMM", "default")
    assert cpu_gemm_mode(torch.empty(1)) is None
