"""The fused MoE kernels (kernels/triton/fused_moe.py) against the grouped torch method
(layers/moe_method.py), under the interpreter on CPU tensors or compiled on a GPU, with uneven
expert loads: experts without tokens, one expert taking every token."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.kernels.triton.fused_moe import align_by_expert, align_by_expert_torch, fused_moe  # noqa: E402
from pagedllm.layers.fused_moe import FusedMoE  # noqa: E402
from pagedllm.layers.moe_method import GroupedTorchMoEMethod, MoESpec  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _experts(num_experts: int, hidden: int, inter: int, seed: int) -> FusedMoE:
    gen = torch.Generator().manual_seed(seed)
    layer = FusedMoE.__new__(FusedMoE)
    torch.nn.Module.__init__(layer)
    layer.num_experts = num_experts
    layer.method = GroupedTorchMoEMethod(MoESpec(num_experts, hidden, inter, torch.float32))
    layer.w13 = torch.nn.Parameter(torch.randn(num_experts, 2 * inter, hidden, generator=gen) * 0.2, requires_grad=False)
    layer.w2 = torch.nn.Parameter(torch.randn(num_experts, hidden, inter, generator=gen) * 0.2, requires_grad=False)
    return layer


@pytest.mark.parametrize("num_tokens,routing", [(1, "random"), (5, "random"), (37, "random"), (9, "one_expert"),
                                                (40, "skewed")])
def test_fused_moe_equals_the_grouped_reference(num_tokens, routing):
    num_experts, hidden, inter, top_k = 8, 48, 40, 2
    layer = _experts(num_experts, hidden, inter, seed=num_tokens)
    gen = torch.Generator().manual_seed(num_tokens + 1)
    x = torch.randn(num_tokens, hidden, generator=gen)
    if routing == "one_expert":  # every token's first slot on expert 3, the second on expert 5
        ids = torch.tensor([[3, 5]] * num_tokens)
    elif routing == "skewed":  # experts 0..2 only; 3..7 get nothing
        ids = torch.stack([torch.randperm(3, generator=gen)[:top_k] for _ in range(num_tokens)])
    else:
        ids = torch.stack([torch.randperm(num_experts, generator=gen)[:top_k] for _ in range(num_tokens)])
    weights = torch.softmax(torch.randn(num_tokens, top_k, generator=gen), -1)
    want = layer.method.apply(layer, x, weights, ids)
    got = fused_moe(x.to(DEVICE), layer.w13.to(DEVICE), layer.w2.to(DEVICE), weights.to(DEVICE), ids.to(DEVICE))
    torch.testing.assert_close(got.cpu(), want, atol=2e-4, rtol=1e-4)


def test_alignment_groups_and_pads_by_expert():
    ids = torch.tensor([[2, 0], [2, 1], [2, 0]])  # rows 0..5: experts 2, 0, 2, 1, 2, 0
    sorted_ids, block_expert = align_by_expert(ids, num_experts=4, block_m=4)
    pad = 6
    assert sorted_ids.tolist()[:12] == [1, 5, pad, pad, 3, pad, pad, pad, 0, 2, 4, pad]
    assert block_expert.tolist()[:3] == [0, 1, 2] and all(e == 4 for e in block_expert.tolist()[3:])
    assert sorted_ids.numel() % 4 == 0 and sorted_ids.numel() >= 6 + 4 * 3


@pytest.mark.parametrize("num_tokens,top_k,num_experts,block_m", [(1, 2, 8, 16), (7, 3, 5, 4), (40, 2, 8, 16),
                                                                   (8, 8, 128, 16), (64, 1, 7, 16)])
def test_the_alignment_kernel_equals_the_torch_ops(num_tokens, top_k, num_experts, block_m):
    gen = torch.Generator().manual_seed(num_tokens)
    ids = torch.stack([torch.randperm(num_experts, generator=gen)[:top_k] for _ in range(num_tokens)])
    ids[: num_tokens // 2, 0] = 1  # one expert crowded
    want = align_by_expert_torch(ids, num_experts, block_m)
    got = align_by_expert(ids.to(DEVICE), num_experts, block_m)
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])


def _random_routing(num_tokens: int, hidden: int, num_experts: int, top_k: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x [T, H], topk_weights [T, k], topk_ids [T, k]): distinct random experts per token."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tokens, hidden, generator=gen)
    ids = torch.stack([torch.randperm(num_experts, generator=gen)[:top_k] for _ in range(num_tokens)])
    return x, torch.softmax(torch.randn(num_tokens, top_k, generator=gen), -1), ids


@pytest.mark.parametrize("block", [None, (16, 16)])
@pytest.mark.parametrize("num_tokens", [3, 40])
def test_fp8_experts_in_the_fused_kernels_equal_the_dequantizing_reference(block, num_tokens):
    """FP8 experts (layers/fp8_moe.py): the fused GEMMs dequantize their tiles (per-channel scales
    after the sum, block scales per K tile) as the torch method dequantizes whole experts."""
    from pagedllm.kernels import quant_reference as ref
    from pagedllm.layers.fp8_moe import Fp8MoEMethod
    from pagedllm.quantization.fp8 import Fp8Scheme

    num_experts, hidden, inter, top_k = 6, 64, 48, 2
    layer = _experts(num_experts, hidden, inter, seed=num_tokens)
    method = Fp8MoEMethod(MoESpec(num_experts, hidden, inter, torch.float32), Fp8Scheme(block))
    for name in ("w13", "w2"):
        pairs = [ref.quantize_fp8_weight(w, block) for w in getattr(layer, name)]
        setattr(layer, name, torch.nn.Parameter(torch.stack([q for q, _ in pairs]), requires_grad=False))
        setattr(layer, f"{name}_scale", torch.nn.Parameter(torch.stack([s for _, s in pairs]), requires_grad=False))
    layer.method = method
    x, weights, ids = _random_routing(num_tokens, hidden, num_experts, top_k, seed=num_tokens + 1)
    want = method.apply(layer, x, weights, ids)
    dev = {n: getattr(layer, n).to(DEVICE) for n in ("w13", "w2", "w13_scale", "w2_scale")}
    got = fused_moe(x.to(DEVICE), dev["w13"], dev["w2"], weights.to(DEVICE), ids.to(DEVICE),
                    w13_scale=dev["w13_scale"], w2_scale=dev["w2_scale"], block=block)
    torch.testing.assert_close(got.cpu(), want, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("num_tokens", [3, 40])
def test_int4_experts_in_the_fused_kernels_equal_the_dequantizing_reference(num_tokens):
    """INT4 experts (layers/int4_moe.py): the fused GEMMs unpack and dequantize their tiles as the
    torch method dequantizes whole experts."""
    from pagedllm.kernels import quant_reference as ref
    from pagedllm.kernels.triton.fused_moe import Int4Experts, fused_moe_int4
    from pagedllm.layers.int4_moe import Int4MoEMethod
    from pagedllm.quantization.int4 import Int4Scheme

    num_experts, hidden, inter, top_k, group = 6, 64, 48, 2, 16
    layer = _experts(num_experts, hidden, inter, seed=num_tokens)
    method = Int4MoEMethod(MoESpec(num_experts, hidden, inter, torch.float32), Int4Scheme("awq", group))
    for name in ("w13", "w2"):
        parts = [ref.quantize_int4(w.t(), group) for w in getattr(layer, name)]  # [in, out] per expert
        packed = torch.stack([ref.pack_int4_rows(q) for q, _, _ in parts])
        layer.register_parameter(f"{name}_qweight", torch.nn.Parameter(packed, requires_grad=False))
        layer.register_parameter(f"{name}_scales", torch.nn.Parameter(torch.stack([s for _, s, _ in parts]),
                                                                      requires_grad=False))
        layer.register_parameter(f"{name}_izeros", torch.nn.Parameter(
            torch.stack([z for _, _, z in parts]).float(), requires_grad=False))
    layer.method = method
    x, weights, ids = _random_routing(num_tokens, hidden, num_experts, top_k, seed=num_tokens + 1)
    want = method.apply(layer, x, weights, ids)
    w13, w2 = (Int4Experts(*(getattr(layer, f"{n}_{k}").to(DEVICE) for k in ("qweight", "scales", "izeros")), group)
               for n in ("w13", "w2"))
    got = fused_moe_int4(x.to(DEVICE), w13, w2, weights.to(DEVICE), ids.to(DEVICE))
    torch.testing.assert_close(got.cpu(), want, atol=2e-4, rtol=1e-4)
