"""The CPU linear methods (our AVX-512 GEMM over panels, and oneDNN) equal the plain one, and
KernelConfig.cpu_gemm picks them."""
from __future__ import annotations

import pytest
import torch

from pagedllm.config import KernelConfig
from pagedllm.kernels.cpu import avx512_kernels, pack_linear_f32
from pagedllm.layers.cpu_linear import OneDnnLinearMethod, PanelLinearMethod
from pagedllm.layers.embedding import LMHead
from pagedllm.layers.layer_kernels import use_layer_kernels
from pagedllm.layers.linear import Linear, MergedLinear
from pagedllm.layers.linear_method import UnquantizedLinearMethod
from pagedllm.platforms.cpu import CpuPlatform

METHODS = {"auto": PanelLinearMethod, "onednn": OneDnnLinearMethod}


def _kernels(cpu_gemm: str):
    return use_layer_kernels(CpuPlatform().layer_kernels(KernelConfig(cpu_gemm=cpu_gemm)))


def _filled(layer: Linear, seed: int) -> Linear:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight_t.copy_(torch.randn(layer.weight_t.shape, generator=gen))
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    return layer


def _pair(cpu_gemm: str, build, seed: int) -> tuple[Linear, Linear]:
    """(the layer under `cpu_gemm`, packed; the same weights under plain torch.matmul)."""
    with _kernels(cpu_gemm):
        packed = _filled(build(), seed)
    with _kernels("torch"):
        plain = _filled(build(), seed)
    assert isinstance(packed.method, METHODS[cpu_gemm])
    assert type(plain.method) is UnquantizedLinearMethod
    packed.process_weights_after_loading()
    assert packed.weight_t.numel() == 0  # the packed copy is the only one kept
    return packed, plain


@pytest.fixture(params=list(METHODS))
def cpu_gemm(request: pytest.FixtureRequest) -> str:
    with _kernels(request.param):
        method = Linear(8, 8, bias=False, dtype=torch.float32).method
    if not isinstance(method, METHODS[request.param]):
        pytest.skip(f"no {request.param} GEMM on this machine")
    return request.param


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("num_tokens", [1, 7, 13, 64, 300])  # 13: a row block past 12; 300: two row chunks
@pytest.mark.parametrize("out_features", [160, 45])  # 45: a panel with 13 columns past the 32
def test_packed_equals_plain(cpu_gemm, bias, num_tokens, out_features):
    packed, plain = _pair(cpu_gemm, lambda: Linear(96, out_features, bias=bias, dtype=torch.float32), 0)
    x = torch.randn(num_tokens, 96)
    torch.testing.assert_close(packed(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("num_tokens", [1, 13, 64])
def test_accumulate_adds_into_the_residual(cpu_gemm, bias, num_tokens):
    """The o/down projections' epilogue: residual += x @ W^T + b, in place, as a separate add."""
    packed, plain = _pair(cpu_gemm, lambda: Linear(96, 45, bias=bias, dtype=torch.float32), 4)
    x, residual = torch.randn(num_tokens, 96), torch.randn(num_tokens, 45)
    before = residual.clone()
    out = packed.accumulate_(residual, x)
    assert out is residual
    torch.testing.assert_close(residual, before + plain(x), rtol=1e-5, atol=1e-5)
    if cpu_gemm == "auto":  # the panel GEMM adds after the product: bit-equal to the separate add
        assert torch.equal(residual, before + packed(x))


def test_panel_gemm_takes_row_strided_and_3d_inputs(cpu_gemm):
    packed, plain = _pair(cpu_gemm, lambda: Linear(64, 70, bias=True, dtype=torch.float32), 3)
    wide = torch.randn(9, 200)
    x = wide[:, 10:74]  # rows 200 apart, a view like q out of a fused qkv output
    torch.testing.assert_close(packed(x), plain(x.contiguous()), rtol=1e-5, atol=1e-5)
    x3 = torch.randn(2, 5, 64)
    torch.testing.assert_close(packed(x3), plain(x3), rtol=1e-5, atol=1e-5)


def test_panel_gemm_rows_do_not_depend_on_the_batch():
    """Each output is one FMA chain over k, whatever the batch: bit-equal rows at 1, 12, 13 and 64."""
    kernels = avx512_kernels()
    if kernels is None:
        pytest.skip("no AVX-512 GEMM here")
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(100, 576, generator=gen)
    panels = pack_linear_f32(weight)
    x = torch.randn(64, 576, generator=gen)
    full = kernels.linear_f32(x, panels, None, 100, None)
    for rows in (1, 12, 13):
        assert torch.equal(kernels.linear_f32(x[:rows], panels, None, 100, None), full[:rows])
    assert torch.equal(kernels.linear_f32(x[40:41], panels, None, 100, None), full[40:41])


def test_packed_merged_and_lm_head(cpu_gemm):
    merged, merged_plain = _pair(cpu_gemm, lambda: MergedLinear(64, {"q": 64, "k": 32, "v": 32}, bias=True,
                                                                dtype=torch.float32), 1)
    head, head_plain = _pair(cpu_gemm, lambda: LMHead(64, 500, dtype=torch.float32), 2)
    x = torch.randn(5, 64)
    for got, exp in zip(merged.split(merged(x)), merged_plain.split(merged_plain(x))):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)
    assert head(x).dtype == torch.float32
    torch.testing.assert_close(head(x), head_plain(x), rtol=1e-5, atol=1e-5)


def test_cpu_gemm_choice_takes_effect():
    """KernelConfig.cpu_gemm (the former PAGEDLLM_CPU_GEMM): auto takes the panels for float32
    where built and oneDNN for bfloat16; onednn oneDNN for both; torch the plain weight."""
    def method(cpu_gemm: str, dtype: torch.dtype) -> type:
        with _kernels(cpu_gemm):
            return type(Linear(32, 32, bias=False, dtype=dtype).method)

    if not OneDnnLinearMethod.available(torch.float32):
        pytest.skip("torch has no oneDNN here")
    assert method("auto", torch.float32) is (PanelLinearMethod if avx512_kernels() else OneDnnLinearMethod)
    assert method("auto", torch.bfloat16) is OneDnnLinearMethod
    assert method("onednn", torch.float32) is OneDnnLinearMethod
    assert method("torch", torch.float32) is UnquantizedLinearMethod
    assert method("torch", torch.bfloat16) is UnquantizedLinearMethod
    kernels_off = CpuPlatform().layer_kernels(KernelConfig(cpu_kernels=False))
    with use_layer_kernels(kernels_off):  # no C++ module: no panels either
        assert type(Linear(32, 32, bias=False, dtype=torch.float32).method) is OneDnnLinearMethod
