"""A mixture-of-experts layer's experts: their stacked weights and the grouped computation, through
the MoE method the platform chose (layers/moe_method.py); routing is the caller's (moe_routing.py).

Checkpoint names are HF's per expert, "<prefix>.experts.<e>.<gate_proj|up_proj|down_proj>.weight";
the loader hands each to this layer with shard "<e>.<name>" (models/param_loading.py)."""
from __future__ import annotations

import torch
from torch import nn

from pagedllm.distributed.parallel_state import current_tensor_parallel, divide
from pagedllm.layers.layer_kernels import current_layer_kernels
from pagedllm.layers.loadable import HFWeightLoadable
from pagedllm.layers.moe_method import EXPERT_WEIGHTS, MoESpec, default_moe_method
from pagedllm.layers.moe_routing import RoutingSpec
from pagedllm.layers.tensor_shards import narrow


class FusedMoE(HFWeightLoadable):
    w13: nn.Parameter  # [E, 2I, H]
    w2: nn.Parameter  # [E, H, I]
    # fp8 experts' scales (layers/fp8_moe.py)
    w13_scale: nn.Parameter
    w2_scale: nn.Parameter

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, dtype: torch.dtype,
                 prefix: str = "") -> None:
        """prefix: the HF name of the experts ("model.layers.1.mlp.experts")."""
        super().__init__()
        self.num_experts = num_experts
        # Under tensor parallelism every rank holds every expert's part of the intermediate features
        # (gate/up rows, down columns), as a column- then a row-parallel layer: the output is summed
        # over the ranks.
        self.tp = current_tensor_parallel()
        self.local_intermediate = divide(intermediate_size, self.tp.size, "An expert's intermediate size")
        kernels = current_layer_kernels()
        spec = MoESpec(num_experts, hidden_size, self.local_intermediate, dtype, kernels.scheme_of([prefix]))
        if spec.scheme is not None and self.tp.size > 1:
            raise ValueError(f"Tensor parallelism over {spec.scheme.name}-quantized experts is not supported yet "
                             "(unquantized experts split; quantized ones run on one rank, or over pipeline stages).")
        factory = kernels.moe_method
        self.method = factory(spec) if factory is not None else default_moe_method(spec)
        self.method.create_weights(self)

    def route(self, router_logits: torch.Tensor, spec: RoutingSpec,
              correction_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """router_logits [T, E] -> (topk_weights [T, k] float32, topk_ids [T, k]), by the method."""
        return self.method.route(router_logits, spec, correction_bias)

    def forward(self, x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        """x [T, H], topk_weights [T, k] float32, topk_ids [T, k] -> [T, H]."""
        return self.tp.all_reduce_(self.method.apply(self, x, topk_weights, topk_ids))

    def process_weights_after_loading(self) -> None:
        self.method.process_weights_after_loading(self)

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        return [(attr, f"{e}.{name}") for e in range(self.num_experts) for name in EXPERT_WEIGHTS
                for attr in self.method.expert_attrs()]

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        expert, _, name = (shard or "").partition(".")
        if (attr not in self.method.expert_attrs() or name not in EXPERT_WEIGHTS or not expert.isdigit()
                or int(expert) >= self.num_experts):
            raise ValueError(f"Unexpected expert weight {shard}.{attr}.")
        if self.tp.size > 1:  # down_proj [H, I] by its columns, gate/up [I, H] by their rows
            size = self.local_intermediate
            tensor = narrow(tensor, 1 if name == "down_proj" else 0, self.tp.rank * size, size)
        self.method.load_weight(self, int(expert), name, tensor, attr)
