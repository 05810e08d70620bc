"""FP8 experts of a mixture-of-experts layer (quantization/fp8.py): Qwen3-MoE-FP8 and DeepSeek-V3
style checkpoints (each expert's gate/up/down an fp8 weight with block or per-tensor scales), and
online fp8 of an unquantized checkpoint's experts.

The stacked weights keep the unquantized method's layout in float8_e4m3fn: w13 [E, 2I, H] and
w2 [E, H, I], with their scales beside them: per output channel, w13_scale [E, 2I] and w2_scale
[E, H] (a per-tensor scale expanded to its rows), or per block, [E, ceil(2I / bn), ceil(H / bk)]
and [E, ceil(H / bn), ceil(I / bk)] (gate and up must each fill whole blocks of rows).

Fp8MoEMethod dequantizes the experts a step routes to, in torch (the CPU's path and the
reference); Fp8TritonMoEMethod runs the fused grouped GEMMs with the fp8 weights dequantized in
their tiles (weight-only: the activations stay in the model's dtype).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pagedllm.kernels.quant_reference import FP8_DTYPE, block_scale_shape, dequantize_fp8, quantize_fp8_weight
from pagedllm.layers.loadable import copy_checked, new_param
from pagedllm.layers.moe_method import _SHARDS, GroupedTorchMoEMethod, MoESpec, TritonRouting

if TYPE_CHECKING:
    from pagedllm.layers.fused_moe import FusedMoE
    from pagedllm.quantization.fp8 import Fp8Scheme


class Fp8MoEMethod(GroupedTorchMoEMethod):
    def __init__(self, spec: MoESpec, scheme: Fp8Scheme) -> None:
        super().__init__(spec)
        self.scheme = scheme
        self.scale_attr = scheme.scale_attr
        if scheme.block is not None and spec.intermediate_size % scheme.block[0]:
            raise ValueError(f"FP8 experts of intermediate size {spec.intermediate_size} do not fill whole "
                             f"{scheme.block[0]}-row blocks of scales.")

    def expert_attrs(self) -> tuple[str, ...]:
        if not self.scheme.serialized:
            return ("weight",)
        return ("weight", self.scale_attr) + (("input_scale",) if self.scheme.static_input else ())

    def create_weights(self, layer: FusedMoE) -> None:
        s = self.spec
        if not self.scheme.serialized:
            super().create_weights(layer)  # the model's dtype, quantized after loading
            return
        e, h, i = s.num_experts, s.hidden_size, s.intermediate_size
        layer.w13 = new_param(e, 2 * i, h, dtype=FP8_DTYPE)
        layer.w2 = new_param(e, h, i, dtype=FP8_DTYPE)
        layer.w13_scale = new_param(e, *block_scale_shape(2 * i, h, self.scheme.block), dtype=torch.float32)
        layer.w2_scale = new_param(e, *block_scale_shape(h, i, self.scheme.block), dtype=torch.float32)

    def load_weight(self, layer: FusedMoE, expert: int, name: str, tensor: torch.Tensor, attr: str = "weight") -> None:
        if attr == "weight":
            if self.scheme.serialized and tensor.dtype != FP8_DTYPE:
                raise ValueError(f"Expert {expert} {name} of an FP8 checkpoint came as {tensor.dtype}.")
            super().load_weight(layer, expert, name, tensor)
        elif attr == self.scale_attr:
            self._load_scale(layer, expert, name, tensor.float())
        elif attr != "input_scale":  # static activation scales: the experts run weight-only
            raise ValueError(f"Unexpected FP8 expert parameter {name}.{attr}.")

    def _load_scale(self, layer: FusedMoE, expert: int, name: str, scale: torch.Tensor) -> None:
        stacked, part = _SHARDS[name]
        target = (layer.w13_scale if stacked == "w13" else layer.w2_scale)[expert]
        rows = self.spec.intermediate_size if stacked == "w13" else self.spec.hidden_size
        if self.scheme.block is not None:
            rows = -(-rows // self.scheme.block[0])
        if stacked == "w13":
            target = target[part * rows:(part + 1) * rows]
        if self.scheme.block is None and scale.numel() == 1:
            target.fill_(scale.item())
        else:
            copy_checked(target, scale.reshape(target.shape), f"expert {expert} {name} {self.scale_attr}")

    @torch.no_grad()
    def process_weights_after_loading(self, layer: FusedMoE) -> None:
        if self.scheme.serialized:
            return
        for stacked in ("w13", "w2"):  # online: per output channel of each expert
            w = getattr(layer, stacked)
            pairs = [quantize_fp8_weight(w[e]) for e in range(w.shape[0])]
            setattr(layer, stacked, torch.nn.Parameter(torch.stack([q for q, _ in pairs]), requires_grad=False))
            setattr(layer, f"{stacked}_scale", torch.nn.Parameter(torch.stack([s for _, s in pairs]),
                                                                  requires_grad=False))

    def expert_weights(self, layer: FusedMoE, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.scheme.block
        return (dequantize_fp8(layer.w13[expert], layer.w13_scale[expert], block).to(dtype),
                dequantize_fp8(layer.w2[expert], layer.w2_scale[expert], block).to(dtype))


class Fp8TritonMoEMethod(TritonRouting, Fp8MoEMethod):
    """CUDA: the Triton routing and fused grouped GEMMs, the fp8 tiles dequantized in the GEMMs."""

    def apply(self, layer: FusedMoE, x: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor) -> torch.Tensor:
        from pagedllm.kernels.triton.fused_moe import fused_moe

        return fused_moe(x.contiguous(), layer.w13, layer.w2, topk_weights, topk_ids,
                         w13_scale=layer.w13_scale, w2_scale=layer.w2_scale, block=self.scheme.block)
