"""The Triton GEMM for steps of at most 16 rows (kernels/triton/skinny_gemm.py) against torch:
plain, added into a residual, and gate_up with its SiLU-and-mul (and folded-norm) epilogue;
unsplit and split-K (the reduce in the same launch).

Under the interpreter the kernel is called on CPU tensors; on a GPU the layers' dispatch is
checked too, and PDL on against off. Written outputs are NaN-poisoned first.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.kernels.triton.skinny_gemm import GemvConfig, config_for, pick_config, skinny_gemm  # noqa: E402
from pagedllm.layers.activation import SiluAndMul  # noqa: E402
from pagedllm.layers.norm import scale_rows_by_inv_rms  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
# ||got - want|| / ||want||: float32 sums in another order, then the dtype's rounding (and for the
# gated epilogue the same roundings as silu_and_mul, which can each flip by one ulp).
REL_TOL = {torch.bfloat16: 8e-3, torch.float16: 1e-3}
K, N, H = 512, 192, 320


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype
    assert not got.isnan().any(), "NaN in output: an element was not written"
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def weights(gen: torch.Generator, k: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    return (torch.randn(k, n, generator=gen) / k**0.5).to(DEVICE, dtype)


CONFIGS = [GemvConfig(64, 64, 1, num_stages=2), GemvConfig(64, 64, 4, num_stages=2),
           GemvConfig(32, 128, 2, num_stages=3)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 5, 16])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["unsplit", "split4", "split2"])
def test_product_and_accumulate(dtype, rows, cfg):
    gen = torch.Generator().manual_seed(rows)
    w = weights(gen, K, N, dtype)
    x = torch.randn(rows, K, generator=gen).to(DEVICE, dtype)
    want = (x.float() @ w.float()).to(dtype)
    out = torch.full((rows, N), float("nan"), dtype=dtype, device=DEVICE)
    for _ in range(2):  # twice: the split counters must be back at zero after a launch
        assert skinny_gemm(x, w, cfg, out=out) is out
        assert rel_err(out, want) < REL_TOL[dtype]
    residual = torch.randn(rows, N, generator=gen).to(DEVICE, dtype)
    want_acc = residual.clone().float().addmm_(x.float(), w.float()).to(dtype)
    got = skinny_gemm(x, w, cfg, out=residual.clone(), accumulate=True)
    assert rel_err(got, want_acc) < REL_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 7])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["unsplit", "split4", "split2"])
@pytest.mark.parametrize("with_norm", [False, True])
def test_gated_epilogue_is_silu_and_mul(dtype, rows, cfg, with_norm):
    """| gate | up | weight: the output is what gate_up's product then SiluAndMul (after the
    folded norm's 1 / rms scale) gives, without the gate_up tensor."""
    gen = torch.Generator().manual_seed(10 * rows + with_norm)
    w = weights(gen, K, 2 * N, dtype) * 3
    x = torch.randn(rows, K, generator=gen).to(DEVICE, dtype)
    h = (torch.randn(rows + 2, H, generator=gen) * 2).to(DEVICE, dtype) if with_norm else None
    gate_up = (x.float() @ w.float()).to(dtype)
    if with_norm:
        gate_up = scale_rows_by_inv_rms(gate_up.cpu(), h.cpu(), 1e-5).to(DEVICE)
    want = SiluAndMul().forward_native(gate_up)
    out = torch.full((rows, N), float("nan"), dtype=dtype, device=DEVICE)
    for _ in range(2):
        skinny_gemm(x, w, cfg, out=out, gated=True, norm_input=h, eps=1e-5)
        assert rel_err(out, want) < REL_TOL[dtype]


def test_pick_config_about_one_program_per_sm():
    """The Llama-3-8B projections get the launch shapes that streamed fastest on an H100."""
    assert pick_config(4096, 6144, False, 132) == GemvConfig(64, 128, 1, num_stages=5)  # qkv: 96 tiles
    assert pick_config(4096, 4096, False, 132) == GemvConfig(64, 128, 2, num_stages=5)  # o: 64 tiles x 2
    assert pick_config(14336, 4096, False, 132) == GemvConfig(64, 128, 2, num_stages=5)  # down
    assert pick_config(4096, 14336, True, 132) == GemvConfig(128, 128, 1, num_stages=3)  # gate_up: 112 x 2 tiles
    for k, n, gated in ((4096, 4096, False), (14336, 4096, False), (1024, 3072, True)):
        cfg = pick_config(k, n, gated, 132)
        assert n // cfg.block_n * cfg.split_k <= 132 and k % (cfg.split_k * cfg.block_k) == 0
    assert pick_config(64, 96, False, 132) == GemvConfig(32, 64, 1, num_stages=5)  # a tiny model
    assert pick_config(100, 64, False, 132) is None  # no BLOCK_K divides K


def test_config_for_takes_small_half_precision_steps_of_large_weights(monkeypatch):
    big, small = torch.zeros(4096, 4096, dtype=torch.bfloat16), torch.zeros(128, 64, dtype=torch.bfloat16)
    x_big, x_small = torch.zeros(4, 4096, dtype=torch.bfloat16), torch.zeros(4, 128, dtype=torch.bfloat16)
    monkeypatch.delenv("PAGEDLLM_TRITON_GEMV", raising=False)  # auto: weights of 16M elements and up
    assert config_for(x_big, big) is not None and config_for(x_small, small) is None
    monkeypatch.setenv("PAGEDLLM_TRITON_GEMV", "0")
    assert config_for(x_big, big) is None
    monkeypatch.setenv("PAGEDLLM_TRITON_GEMV", "1")  # every shape with a launch shape
    assert config_for(x_small, small) is not None
    assert config_for(torch.zeros(17, 128, dtype=torch.bfloat16), small) is None  # more than 16 rows
    assert config_for(x_small.float(), small.float()) is None  # float32 stays on cuBLAS (tl.dot: tf32)
    assert config_for(x_small, torch.zeros(128, 63, dtype=torch.bfloat16), gated=True) is None


@pytest.mark.skipif(not ON_GPU, reason="PDL and the layers' CUDA dispatch need a GPU")
def test_layers_take_the_kernel_and_pdl_changes_nothing(monkeypatch):
    from pagedllm.layers.linear import Linear
    from pagedllm.models.common import GatedMLP

    monkeypatch.setenv("PAGEDLLM_TRITON_GEMV", "1")
    gen = torch.Generator().manual_seed(3)
    lin = Linear(4096, 4096, False, torch.bfloat16).to(DEVICE)
    mlp = GatedMLP(4096, 14336, False, torch.bfloat16).to(DEVICE)
    with torch.no_grad():
        for p in (lin.weight_t, mlp.gate_up_proj.weight_t, mlp.down_proj.weight_t):
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[0] ** 0.5)
    x = torch.randn(3, 4096, generator=gen).to(DEVICE, torch.bfloat16)
    cfg = config_for(x, lin.weight_t)
    assert cfg is not None
    got = lin(x)
    assert torch.equal(got, skinny_gemm(x, lin.weight_t, cfg, pdl=False))
    assert rel_err(got, torch.matmul(x, lin.weight_t)) < REL_TOL[torch.bfloat16]
    residual = x.clone()
    lin.accumulate_(residual, x)
    assert rel_err(residual, x + torch.matmul(x, lin.weight_t)) < REL_TOL[torch.bfloat16]
    h = x.clone()
    got_mlp = mlp(x, h, (h, 1e-5))
    monkeypatch.setenv("PAGEDLLM_TRITON_GEMV", "0")
    h_ref = x.clone()
    want_mlp = mlp(x, h_ref, (h_ref, 1e-5))
    assert rel_err(got_mlp, want_mlp) < 2e-2
