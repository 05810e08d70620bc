"""INT4 experts of a mixture-of-experts layer (AWQ, GPTQ, compressed-tensors W4A16 checkpoints of
Qwen3-MoE or Mixtral: quantization/int4.py), weight-only.

Loading unpacks each expert projection's tensors (layers/int4_linear.unpack_checkpoint_tensor)
into staging parameters, one value a byte, [in, out] per expert: w13_q [E, H, 2I] (gate's
columns, then up's), w2_q [E, I, H], with their zeros and scales [E, in / G, out]. After loading
each is packed once into the kernels' layout (kernels/quant_reference.py): w13_qweight int32
[E, H / 8, 2I] and w2_qweight [E, I / 8, H], scales and zeros in the activations' dtype.

Int4MoEMethod dequantizes the experts a step routes to, in torch (the CPU's path and the
reference); Int4TritonMoEMethod runs the fused grouped GEMMs with the int4 tiles dequantized in
registers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pagedllm.kernels.quant_reference import dequantize_int4, pack_int4_rows
from pagedllm.layers.int4_linear import int4_attrs, unpack_checkpoint_tensor
from pagedllm.layers.loadable import copy_checked, new_param
from pagedllm.layers.moe_method import _SHARDS, GroupedTorchMoEMethod, MoESpec, TritonRouting

if TYPE_CHECKING:
    from pagedllm.layers.fused_moe import FusedMoE
    from pagedllm.quantization.int4 import Int4Scheme

_KINDS = ("q", "zeros", "scales")


class Int4MoEMethod(GroupedTorchMoEMethod):
    def __init__(self, spec: MoESpec, scheme: Int4Scheme) -> None:
        super().__init__(spec)
        self.scheme = scheme
        # (in, out) of each stacked weight, and its group of input features
        self.dims = {"w13": (spec.hidden_size, 2 * spec.intermediate_size),
                     "w2": (spec.intermediate_size, spec.hidden_size)}
        self.groups = {name: scheme.group_size if scheme.group_size > 0 else k for name, (k, _) in self.dims.items()}
        for name, (k, n) in self.dims.items():
            if k % self.groups[name] or k % 8 or n % 16:
                raise ValueError(f"INT4 experts of {k} inputs and {n} outputs do not split into groups of "
                                 f"{self.groups[name]} inputs, words of 8 and tiles of 16 outputs.")

    def expert_attrs(self) -> tuple[str, ...]:
        return int4_attrs(self.scheme)

    def create_weights(self, layer: FusedMoE) -> None:
        e = self.spec.num_experts
        for name, (k, n) in self.dims.items():
            groups = k // self.groups[name]
            layer.register_parameter(f"{name}_q", new_param(e, k, n, dtype=torch.uint8))
            layer.register_parameter(f"{name}_zeros", new_param(e, groups, n, dtype=torch.uint8))
            layer.register_parameter(f"{name}_scales", new_param(e, groups, n, dtype=self.spec.dtype))
            if self.scheme.format == "pack-quantized" and self.scheme.symmetric:
                getattr(layer, f"{name}_zeros").fill_(8)

    def load_weight(self, layer: FusedMoE, expert: int, name: str, tensor: torch.Tensor, attr: str = "weight") -> None:
        stacked, part = _SHARDS[name]
        k, n = self.dims[stacked]
        size = self.spec.intermediate_size if stacked == "w13" else n
        unpacked = unpack_checkpoint_tensor(self.scheme.format, attr, tensor, k, self.groups[stacked], size)
        if unpacked is None:
            return
        kind, value = unpacked
        if kind == "g_idx":
            if not torch.equal(value, torch.arange(k, device=value.device) // self.groups[stacked]):
                raise ValueError("GPTQ experts quantized in act-order (desc_act=true) are not supported; use a "
                                 "checkpoint quantized with desc_act=false.")
            return
        target = getattr(layer, f"{stacked}_{kind}")[expert][:, part * size:(part + 1) * size]
        copy_checked(target, value, f"expert {expert} {name}.{attr} (unpacked)")

    @torch.no_grad()
    def process_weights_after_loading(self, layer: FusedMoE) -> None:
        for name in self.dims:
            q = getattr(layer, f"{name}_q")
            packed = torch.stack([pack_int4_rows(q[e]) for e in range(q.shape[0])])
            layer.register_parameter(f"{name}_qweight", torch.nn.Parameter(packed, requires_grad=False))
            zeros = getattr(layer, f"{name}_zeros").to(self.spec.dtype)
            layer.register_parameter(f"{name}_izeros", torch.nn.Parameter(zeros, requires_grad=False))
            for kind in ("q", "zeros"):
                delattr(layer, f"{name}_{kind}")

    def expert_weights(self, layer: FusedMoE, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        w13, w2 = (dequantize_int4(getattr(layer, f"{n}_qweight")[expert], getattr(layer, f"{n}_scales")[expert],
                                   getattr(layer, f"{n}_izeros")[expert], self.groups[n]) for n in ("w13", "w2"))
        return w13.t().to(dtype), w2.t().to(dtype)


class Int4TritonMoEMethod(TritonRouting, Int4MoEMethod):
    """CUDA: the Triton routing and fused grouped GEMMs over the packed int4 experts."""

    def apply(self, layer: FusedMoE, x: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor) -> torch.Tensor:
        from pagedllm.kernels.triton.fused_moe import Int4Experts, fused_moe_int4

        w13, w2 = (Int4Experts(getattr(layer, f"{n}_qweight"), getattr(layer, f"{n}_scales"),
                               getattr(layer, f"{n}_izeros"), self.groups[n]) for n in ("w13", "w2"))
        return fused_moe_int4(x.contiguous(), w13, w2, topk_weights, topk_ids)
