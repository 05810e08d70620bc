"""CUDA's method for bf16/fp16 weights that our Triton GEMM for small steps takes
(kernels/triton/skinny_gemm.py): steps of at most 16 rows (decode at small batch) stream the
weight through it, with the residual add or SiLU-and-mul (and a folded norm's scale) in its
epilogue and programmatic dependent launch; larger steps go to cuBLAS as the unquantized method
does. Whether a weight takes this path, and its launch shape, is decided once at load
(Platform.linear_method, KernelConfig.skinny_gemm)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pagedllm.kernels.triton.skinny_gemm import GemvConfig, skinny_gemm, takes_rows
from pagedllm.layers.linear_method import GatedAct, LinearSpec, NormScale, UnquantizedLinearMethod

if TYPE_CHECKING:
    from pagedllm.layers.linear import Linear


class SkinnyGemmLinearMethod(UnquantizedLinearMethod):
    def __init__(self, spec: LinearSpec, config: GemvConfig, pdl: bool) -> None:
        """config: the weight's launch shape (gated: of the SiLU-and-mul epilogue, from
        skinny_config(..., gated=True)); pdl: launch as programmatic dependents."""
        assert not spec.bias, "the skinny GEMM has no bias epilogue"
        super().__init__(spec)
        self.config = config
        self.pdl = pdl

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        if self.spec.gated or not takes_rows(x, layer.weight_t):
            return super().apply(layer, x)
        return skinny_gemm(x, layer.weight_t, self.config, pdl=self.pdl)

    def apply_add(self, layer: Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self.spec.gated or not takes_rows(x, layer.weight_t) or residual.stride(-1) != 1:
            return super().apply_add(layer, x, residual)
        return skinny_gemm(x, layer.weight_t, self.config, out=residual, accumulate=True, pdl=self.pdl)

    def apply_gated(self, layer: Linear, x: torch.Tensor, act: GatedAct,
                    norm_scale: NormScale | None) -> torch.Tensor:
        if not self.spec.gated or not takes_rows(x, layer.weight_t):
            return super().apply_gated(layer, x, act, norm_scale)
        norm_input, eps = norm_scale if norm_scale is not None else (None, 0.0)
        return skinny_gemm(x, layer.weight_t, self.config, gated=True, norm_input=norm_input, eps=eps,
                           pdl=self.pdl)
