"""The MoE-method seam: how a mixture-of-experts layer stores its experts' weights and runs the
experts each token was routed to (layers/fused_moe.py holds one, chosen once by the platform from
its MoESpec, as a Linear holds a LinearMethod).

Weights are stacked per expert at load, from HF's per-expert tensors:

    w13  [E, 2I, H]   | gate | up | of each expert (gate_proj / w1, up_proj / w3)
    w2   [E, H, I]    down_proj / w2

apply(x [T, H], topk_weights [T, k] float32, topk_ids [T, k]) -> [T, H]:
    sum over j of topk_weights[t, j] * down_e(silu(gate_e(x_t)) * up_e(x_t)),  e = topk_ids[t, j]

This module holds the interface, the grouped torch method (the CPU path, and the reference the
fused kernels are tested against) and the Triton method of CUDA.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from pagedllm.layers.loadable import copy_checked, new_param
from pagedllm.layers.moe_routing import RoutingSpec, route

if TYPE_CHECKING:
    from pagedllm.layers.fused_moe import FusedMoE
    from pagedllm.quantization.base import LinearScheme

# Where each of an expert's HF tensors goes: (stacked weight, first row) in units of I
_SHARDS = {"gate_proj": ("w13", 0), "up_proj": ("w13", 1), "down_proj": ("w2", 0)}
EXPERT_WEIGHTS = tuple(_SHARDS)


@dataclass(frozen=True)
class MoESpec:
    num_experts: int
    hidden_size: int
    intermediate_size: int  # of one expert
    dtype: torch.dtype
    # the checkpoint's quantization of the experts (FP8: layers/fp8_moe.py); None: unquantized
    scheme: LinearScheme | None = None


class MoEMethod(ABC):
    def __init__(self, spec: MoESpec) -> None:
        self.spec = spec

    def create_weights(self, layer: FusedMoE) -> None:
        """Register the stacked weights (on the current default device), uninitialised."""
        s = self.spec
        layer.w13 = new_param(s.num_experts, 2 * s.intermediate_size, s.hidden_size, dtype=s.dtype)
        layer.w2 = new_param(s.num_experts, s.hidden_size, s.intermediate_size, dtype=s.dtype)

    def expert_attrs(self) -> tuple[str, ...]:
        """The checkpoint tensors of each expert projection, by the last part of their names."""
        return ("weight",)

    def load_weight(self, layer: FusedMoE, expert: int, name: str, tensor: torch.Tensor, attr: str = "weight") -> None:
        """Copy expert `expert`'s HF tensor `name`.`attr` (gate_proj, up_proj, down_proj; [out, in])."""
        if attr != "weight":
            raise ValueError(f"Unexpected expert parameter {name}.{attr}.")
        stacked, part = _SHARDS[name]
        size = self.spec.intermediate_size
        target = getattr(layer, stacked)[expert]
        if stacked == "w13":
            target = target[part * size:(part + 1) * size]
        copy_checked(target, tensor, f"expert {expert} {name}")

    def process_weights_after_loading(self, layer: FusedMoE) -> None:
        """Repack the stacked weights for the kernel (a no-op where it runs on this layout)."""

    def route(self, router_logits: torch.Tensor, spec: RoutingSpec,
              correction_bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's experts and weights (layers/moe_routing.py); torch ops here."""
        return route(router_logits, spec, correction_bias)

    @abstractmethod
    def apply(self, layer: FusedMoE, x: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor) -> torch.Tensor:
        """x [T, H], topk_weights [T, k] float32, topk_ids [T, k] -> [T, H] (see the module)."""


class GroupedTorchMoEMethod(MoEMethod):
    """Tokens grouped by expert (one sort), then two GEMMs per expert that received any: no work
    for idle experts and no loop over tokens. Reads the routing to the host (the group sizes), so it
    is for the CPU and eager references, not for captured CUDA graphs."""

    def apply(self, layer: FusedMoE, x: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor) -> torch.Tensor:
        top_k = topk_ids.shape[1]
        flat_ids = topk_ids.reshape(-1)
        order = torch.argsort(flat_ids, stable=True)  # [T*k] (token, slot) pairs, by expert
        counts = torch.bincount(flat_ids, minlength=self.spec.num_experts).tolist()
        weights = topk_weights.reshape(-1)[order].to(x.dtype).unsqueeze(1)  # [T*k, 1]
        tokens = order // top_k
        out = torch.zeros_like(x)
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            rows = slice(start, start + count)
            start += count
            w13, w2 = self.expert_weights(layer, expert, x.dtype)
            gate, up = (x[tokens[rows]] @ w13.t()).chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ w2.t()
            out.index_add_(0, tokens[rows], y * weights[rows])
        return out

    def expert_weights(self, layer: FusedMoE, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(w13 [2I, H], w2 [H, I]) of one expert, in `dtype` (a quantized method dequantizes)."""
        return layer.w13[expert], layer.w2[expert]


def default_moe_method(spec: MoESpec, triton: bool = False) -> MoEMethod:
    """The experts' method for a spec: a quantized format's (its scheme's), else the fused Triton
    method (`triton`, CUDA) or the grouped torch one."""
    if spec.scheme is not None:
        return spec.scheme.moe_method(spec, triton)
    return TritonMoEMethod(spec) if triton else GroupedTorchMoEMethod(spec)


class TritonRouting(MoEMethod):
    """The routing in one Triton launch (kernels/triton/moe_routing.py): CUDA's methods, whatever
    their experts' format."""

    def route(self, router_logits: torch.Tensor, spec: RoutingSpec,
              correction_bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        from pagedllm.kernels.triton.moe_routing import route_kernel

        return route_kernel(router_logits, spec, correction_bias)


class TritonMoEMethod(TritonRouting):
    """CUDA: the routing in one launch and the experts in two (kernels/triton/fused_moe.py), no
    host sync (captured in CUDA graphs)."""

    def apply(self, layer: FusedMoE, x: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor) -> torch.Tensor:
        from pagedllm.kernels.triton.fused_moe import fused_moe

        return fused_moe(x.contiguous(), layer.w13, layer.w2, topk_weights, topk_ids)
