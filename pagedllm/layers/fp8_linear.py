"""FP8 weights (quantization/fp8.py): the linear methods.

The layer holds `weight` float8_e4m3fn [out, in] (the checkpoint's layout) and `weight_scale`
float32: [out] per channel (a checkpoint's per-tensor scale is expanded to its shard's rows, so a
merged layer's shards keep their own), or [ceil(out / bn), ceil(in / bk)] per block. With a static
activation scheme `input_scale` [1] is the largest of the shards' (vLLM's rule). Online
quantization loads the checkpoint's weight in the model's dtype (norm folding can still scale
it) and quantizes it per channel after loading.

Fp8LinearMethod runs anywhere: it dequantizes the weight in torch per call (weight-only, the CPU's
fallback and the reference). On CUDA, Fp8TritonLinearMethod streams the fp8 weight through the
skinny GEMM for steps of at most 16 rows (weight-only, with its epilogues: residual add,
SiLU-and-mul, a folded norm's scale), and larger steps quantize their activations per token (per
token and group for block weights) for a W8A8 GEMM: torch._scaled_mm for per-channel weights on
cards with FP8 tensor cores, our Triton GEMM otherwise and for block scales.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from pagedllm.kernels.quant_reference import FP8_DTYPE, block_scale_shape, dequantize_fp8, quantize_fp8_weight
from pagedllm.layers.linear_method import WHOLE, GatedAct, LinearMethod, LinearSpec, NormScale, TensorAxes
from pagedllm.layers.loadable import copy_checked, new_param

if TYPE_CHECKING:
    from pagedllm.kernels.triton.skinny_gemm import GemvConfig
    from pagedllm.layers.linear import Linear
    from pagedllm.quantization.fp8 import Fp8Scheme


class Fp8LinearMethod(LinearMethod):
    def __init__(self, spec: LinearSpec, scheme: Fp8Scheme) -> None:
        super().__init__(spec)
        self.scheme = scheme
        self.scale_attr = scheme.scale_attr

    def weight_attrs(self) -> tuple[str, ...]:
        if not self.scheme.serialized:
            return ("weight",)
        return ("weight", self.scale_attr) + (("input_scale",) if self.scheme.static_input else ())

    def create_weights(self, layer: Linear) -> None:
        out, inp = self.spec.out_features, self.spec.in_features
        if not self.scheme.serialized:
            layer.weight = new_param(out, inp, dtype=self.spec.dtype)
            return
        layer.weight = new_param(out, inp, dtype=FP8_DTYPE)
        layer.weight_scale = new_param(*block_scale_shape(out, inp, self.scheme.block), dtype=torch.float32)
        if self.scheme.static_input:
            layer.input_scale = new_param(1, dtype=torch.float32)
            layer.input_scale.fill_(0.0)  # the shards' largest is kept

    def load_weight(self, layer: Linear, tensor: torch.Tensor, start: int, size: int) -> None:
        if self.scheme.serialized and tensor.dtype != FP8_DTYPE:
            raise ValueError(f"An FP8 checkpoint's weight rows {start}..{start + size} came as {tensor.dtype}, "
                             "not float8_e4m3fn.")
        copy_checked(layer.weight[start:start + size], tensor, "fp8 linear weight")

    def tensor_axes(self, attr: str, tensor: torch.Tensor) -> TensorAxes:
        if attr == "weight":
            return TensorAxes()
        if attr == "input_scale" or (attr == self.scale_attr and tensor.numel() == 1):
            return WHOLE
        if attr == self.scale_attr:
            block = self.scheme.block
            return TensorAxes(0, 1, None, 1) if block is None else TensorAxes(0, block[0], 1, block[1])
        raise ValueError(f"Unexpected FP8 linear parameter {attr!r}.")

    def load_tensor(self, layer: Linear, attr: str, tensor: torch.Tensor, start: int, size: int) -> None:
        if attr == "weight":
            self.load_weight(layer, tensor, start, size)
        elif attr == self.scale_attr:
            self._load_scale(layer, tensor.float(), start, size)
        elif attr == "input_scale" and self.scheme.static_input:
            layer.input_scale.copy_(torch.maximum(layer.input_scale, tensor.float().reshape(1)))
        else:
            raise ValueError(f"Unexpected FP8 linear parameter {attr!r}.")

    def _load_scale(self, layer: Linear, scale: torch.Tensor, start: int, size: int) -> None:
        block = self.scheme.block
        if block is None:
            if scale.numel() == 1:  # per tensor: each of the shard's rows
                layer.weight_scale[start:start + size].fill_(scale.item())
            else:
                copy_checked(layer.weight_scale[start:start + size], scale.reshape(-1), "fp8 weight_scale")
            return
        bn = block[0]
        if start % bn:
            raise ValueError(f"A merged layer's shard starts at row {start}, inside a {bn}-row block of FP8 "
                             "scales; its shards must align to the blocks.")
        rows = -(-size // bn)
        copy_checked(layer.weight_scale[start // bn:start // bn + rows], scale, "fp8 weight_scale_inv")

    @torch.no_grad()
    def scale_input_rows_(self, layer: Linear, scale: torch.Tensor) -> bool:
        if self.scheme.serialized:
            return False  # scaling would requantize the checkpoint's fp8 values
        w = layer.weight
        w.copy_((w.float() * scale[None, :]).to(w.dtype))
        return True

    @torch.no_grad()
    def process_weights_after_loading(self, layer: Linear) -> None:
        if self.scheme.serialized:
            return
        q, scale = quantize_fp8_weight(layer.weight)
        layer.weight = torch.nn.Parameter(q, requires_grad=False)
        layer.weight_scale = torch.nn.Parameter(scale, requires_grad=False)

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        w = dequantize_fp8(layer.weight, layer.weight_scale, self.scheme.block).to(x.dtype)
        out = torch.matmul(x, w.t())
        return out if layer.bias is None else out + layer.bias


class Fp8TritonLinearMethod(Fp8LinearMethod):
    def __init__(self, spec: LinearSpec, scheme: Fp8Scheme, skinny: GemvConfig | None, pdl: bool,
                 scaled_mm: bool) -> None:
        """skinny: the launch shape of steps of at most 16 rows (None: they take the W8A8 GEMM);
        scaled_mm: per-channel weights' large steps through torch._scaled_mm."""
        super().__init__(spec, scheme)
        # imported once here, not per call (a lazy import: Triton is CUDA's only)
        from pagedllm.kernels.triton.fp8_gemm import fp8_scaled_gemm, quantize_fp8_rows
        from pagedllm.kernels.triton.skinny_gemm import skinny_gemm, takes_rows

        self._quantize_rows, self._w8a8_gemm = quantize_fp8_rows, fp8_scaled_gemm
        self._skinny_gemm, self._takes_rows = skinny_gemm, takes_rows
        self.skinny, self.pdl, self.scaled_mm = skinny, pdl, scaled_mm
        block = scheme.block
        self.skinny_block = 0 if block is None else block[1]
        self.group = None if block is None else block[1]

    def _skinny_rows(self, layer: Linear, x: torch.Tensor) -> bool:
        return self.skinny is not None and self._takes_rows(x, layer.weight)

    def _skinny(self, layer: Linear, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        assert self.skinny is not None
        return self._skinny_gemm(x, layer.weight.t(), self.skinny, pdl=self.pdl, weight_scale=layer.weight_scale,
                                 scale_block=self.skinny_block, **kwargs)  # type: ignore[arg-type]

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            return self.apply(layer, x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)
        if not self.spec.gated and self._skinny_rows(layer, x):
            return self._skinny(layer, x)
        return self._w8a8(layer, x)

    def _w8a8(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        static = layer.input_scale if self.scheme.static_input else None
        xq, xs = self._quantize_rows(x.contiguous(), self.group, static)
        if self.scaled_mm:
            return torch._scaled_mm(xq, layer.weight.t(), scale_a=xs, scale_b=layer.weight_scale.view(1, -1),
                                    bias=layer.bias, out_dtype=x.dtype)
        out = self._w8a8_gemm(xq, xs, layer.weight, layer.weight_scale, self.scheme.block, x.dtype)
        return out if layer.bias is None else out.add_(layer.bias)

    def apply_add(self, layer: Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self.spec.gated or not self._skinny_rows(layer, x) or residual.stride(-1) != 1:
            return super().apply_add(layer, x, residual)
        return self._skinny(layer, x, out=residual, accumulate=True)

    def apply_gated(self, layer: Linear, x: torch.Tensor, act: GatedAct,
                    norm_scale: NormScale | None) -> torch.Tensor:
        if not self.spec.gated or not self._skinny_rows(layer, x):
            return act(self._w8a8(layer, x), norm_scale)
        norm_input, eps = norm_scale if norm_scale is not None else (None, 0.0)
        return self._skinny(layer, x, gated=True, norm_input=norm_input, eps=eps)


def cuda_fp8_method(spec: LinearSpec, scheme: Fp8Scheme, skinny_policy: str, pdl: bool) -> Fp8LinearMethod:
    """CUDA's FP8 method for one weight: its small-step launch shape under the skinny GEMM policy
    (none with a bias, which that kernel has no epilogue for, or for block scales its tiles do not
    fit), and whether torch._scaled_mm takes its large steps (per-channel weights of FP8 cards,
    dimensions of multiples of 16)."""
    from pagedllm.kernels.triton.skinny_gemm import num_sms, skinny_config

    device = torch.get_default_device()
    skinny = None
    if not spec.bias:
        skinny = skinny_config(spec.in_features, spec.out_features, FP8_DTYPE, skinny_policy, num_sms(device),
                               spec.gated)
    block = scheme.block
    if skinny is not None and block is not None:
        if block[0] != block[1]:
            skinny = None  # the kernel's scale lookup takes square blocks
        elif block[1] < skinny.block_k:  # a K tile must lie in one block of scales
            skinny = dataclasses.replace(skinny, block_k=block[1])
    scaled_mm = (block is None and device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
                 and spec.in_features % 16 == 0 and spec.out_features % 16 == 0)
    return Fp8TritonLinearMethod(spec, scheme, skinny, pdl, scaled_mm)
