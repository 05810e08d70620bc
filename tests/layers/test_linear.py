"""The oneDNN-packed linear path equals the plain one."""
from __future__ import annotations

import pytest
import torch

from pagedllm.layers.embedding import LMHead
from pagedllm.layers.linear import Linear, MergedLinear, cpu_packing_enabled


def _filled(layer: Linear, seed: int) -> Linear:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight_t.copy_(torch.randn(layer.weight_t.shape, generator=gen))
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    return layer


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("num_tokens", [1, 7, 64, 300])
def test_packed_equals_plain(bias, num_tokens):
    if not cpu_packing_enabled(torch.empty(1)):
        pytest.skip("torch has no oneDNN here")
    layer = _filled(Linear(96, 160, bias=bias, dtype=torch.float32), 0)
    x = torch.randn(num_tokens, 96)
    expected = layer(x)
    assert layer.pack_for_cpu() and layer.weight_t.numel() == 0
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_packed_merged_and_lm_head():
    if not cpu_packing_enabled(torch.empty(1)):
        pytest.skip("torch has no oneDNN here")
    merged = _filled(MergedLinear(64, {"q": 64, "k": 32, "v": 32}, bias=True, dtype=torch.float32), 1)
    head = _filled(LMHead(64, 500, dtype=torch.float32), 2)
    x = torch.randn(5, 64)
    want = [t.clone() for t in merged.split(merged(x))], head(x)
    merged.pack_for_cpu(), head.pack_for_cpu()
    for got, exp in zip(merged.split(merged(x)), want[0]):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)
    assert head(x).dtype == torch.float32
    torch.testing.assert_close(head(x), want[1], rtol=1e-5, atol=1e-5)


def test_packing_can_be_disabled(monkeypatch):
    monkeypatch.setenv("PAGEDLLM_CPU_GEMM", "default")
    assert not cpu_packing_enabled(torch.empty(1))
