"""The routing kernel (kernels/triton/moe_routing.py) against the torch reference
(layers/moe_routing.route), under the interpreter on CPU tensors or compiled on a GPU: Mixtral's and
Qwen's softmax top-k (renormalised or not), DeepSeek-V2's groups, DeepSeek-V3's sigmoid with a
correction bias over groups and a scaling factor; experts not a power of two."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.kernels.triton.moe_routing import route_kernel  # noqa: E402
from pagedllm.layers.moe_routing import RoutingSpec, route  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("num_experts,spec,bias", [
    (8, RoutingSpec(2, renormalize=True), False),  # Mixtral
    (6, RoutingSpec(3, renormalize=False), False),  # Qwen2-MoE, experts not a power of two
    (12, RoutingSpec(2, scoring="softmax", num_groups=4, topk_groups=2, scaling=1.5), False),  # DeepSeek-V2
    (16, RoutingSpec(4, renormalize=True, scoring="sigmoid", num_groups=4, topk_groups=2, scaling=2.5), True),  # V3
    (10, RoutingSpec(1, renormalize=True, scoring="sigmoid", num_groups=2, topk_groups=1), True),
])
def test_kernel_equals_the_reference(num_experts, spec, bias):
    gen = torch.Generator().manual_seed(num_experts)
    logits = torch.randn(37, num_experts, generator=gen)
    correction = torch.randn(num_experts, generator=gen) * 0.3 if bias else None
    want_w, want_ids = route(logits, spec, correction)
    got_w, got_ids = route_kernel(logits.to(DEVICE), spec, correction.to(DEVICE) if bias else None)
    # the same experts (the kernel gives them best first, as torch.topk does), the same weights
    assert torch.equal(got_ids.cpu(), want_ids)
    torch.testing.assert_close(got_w.cpu(), want_w, rtol=1e-5, atol=1e-6)
