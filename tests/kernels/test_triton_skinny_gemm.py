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

from pagedllm.kernels.triton.skinny_gemm import GemvConfig, pick_config, skinny_config, skinny_gemm, takes_rows  # noqa: E402
from pagedllm.layers.activation import SiluAndMul  # noqa: E402
from pagedllm.kernels.reference import scale_rows_by_inv_rms  # noqa: E402

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


def test_skinny_config_takes_half_precision_weights_by_policy():
    """KernelConfig.skinny_gemm's policies for one weight, decided at load: auto takes weights of
    16M elements and up, on every one with a launch shape, off none; float32 never (tl.dot would
    round it to tf32); a step takes the kernel only with 1..16 rows of the weight's dtype."""
    bf16 = torch.bfloat16
    assert skinny_config(4096, 4096, bf16, "auto", 132) is not None
    assert skinny_config(128, 64, bf16, "auto", 132) is None
    assert skinny_config(4096, 4096, bf16, "off", 132) is None
    assert skinny_config(128, 64, bf16, "on", 132) is not None
    assert skinny_config(128, 64, torch.float32, "on", 132) is None
    assert skinny_config(128, 63, bf16, "on", 132, gated=True) is None
    with pytest.raises(ValueError, match="auto"):
        skinny_config(128, 64, bf16, "1", 132)
    weight = torch.zeros(128, 64, dtype=bf16)
    assert takes_rows(torch.zeros(16, 128, dtype=bf16), weight)
    assert not takes_rows(torch.zeros(17, 128, dtype=bf16), weight)  # more than 16 rows: cuBLAS
    assert not takes_rows(torch.zeros(0, 128, dtype=bf16), weight)
    assert not takes_rows(torch.zeros(4, 128), weight)


def _cuda_layer_kernels(**choices: object):
    from pagedllm.config import KernelConfig
    from pagedllm.layers.layer_kernels import use_layer_kernels
    from pagedllm.platforms.cuda import CudaPlatform

    return use_layer_kernels(CudaPlatform().layer_kernels(KernelConfig(**choices)))


def test_skinny_gemm_and_pdl_choices_take_effect():
    """KernelConfig.skinny_gemm and gemm_pdl (the former PAGEDLLM_TRITON_GEMV, PAGEDLLM_GEMV_PDL)
    through the CUDA platform: the method each weight gets, and whether it launches with PDL."""
    from pagedllm.layers.linear import Linear, MergedLinear
    from pagedllm.layers.linear_method import UnquantizedLinearMethod
    from pagedllm.layers.skinny_linear import SkinnyGemmLinearMethod

    def method(in_f: int, out_f: int, **choices: object):
        with torch.device("meta"), _cuda_layer_kernels(**choices):  # meta: shapes only, no memory
            return Linear(in_f, out_f, bias=False, dtype=torch.bfloat16).method

    assert isinstance(method(4096, 4096), SkinnyGemmLinearMethod)  # auto: a large weight
    assert type(method(1024, 1024)) is UnquantizedLinearMethod  # auto: a small one stays on cuBLAS
    assert isinstance(method(1024, 1024, skinny_gemm="on"), SkinnyGemmLinearMethod)
    assert type(method(4096, 4096, skinny_gemm="off")) is UnquantizedLinearMethod
    assert type(method(4096, 4096, triton=False)) is UnquantizedLinearMethod
    assert method(4096, 4096).pdl and not method(4096, 4096, gemm_pdl=False).pdl
    with torch.device("meta"), _cuda_layer_kernels():
        gate_up = MergedLinear(4096, {"gate": 14336, "up": 14336}, bias=False, dtype=torch.bfloat16, gated=True)
    assert gate_up.method.config == skinny_config(4096, 2 * 14336, torch.bfloat16, "auto", 4, gated=True)


@pytest.mark.skipif(not ON_GPU, reason="PDL and the layers' CUDA dispatch need a GPU")
def test_layers_take_the_kernel_and_pdl_changes_nothing():
    from pagedllm.layers.linear import Linear
    from pagedllm.models.common import GatedMLP

    gen = torch.Generator().manual_seed(3)
    with torch.device(DEVICE), _cuda_layer_kernels(skinny_gemm="on"):
        lin = Linear(4096, 4096, False, torch.bfloat16)
        mlp = GatedMLP(4096, 14336, False, torch.bfloat16)
    with torch.device(DEVICE), _cuda_layer_kernels(skinny_gemm="off"):
        mlp_ref = GatedMLP(4096, 14336, False, torch.bfloat16)
    with torch.no_grad():
        for p in (lin.weight_t, mlp.gate_up_proj.weight_t, mlp.down_proj.weight_t):
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[0] ** 0.5)
    mlp_ref.load_state_dict(mlp.state_dict())
    x = torch.randn(3, 4096, generator=gen).to(DEVICE, torch.bfloat16)
    cfg = lin.method.config
    got = lin(x)
    assert torch.equal(got, skinny_gemm(x, lin.weight_t, cfg, pdl=False))
    assert rel_err(got, torch.matmul(x, lin.weight_t)) < REL_TOL[torch.bfloat16]
    residual = x.clone()
    lin.accumulate_(residual, x)
    assert rel_err(residual, x + torch.matmul(x, lin.weight_t)) < REL_TOL[torch.bfloat16]
    h = x.clone()
    got_mlp = mlp(x, h, (h, 1e-5))
    h_ref = x.clone()
    want_mlp = mlp_ref(x, h_ref, (h_ref, 1e-5))
    assert rel_err(got_mlp, want_mlp) < 2e-2
