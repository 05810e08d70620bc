"""Gated activations for merged gate_up projections."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagedllm.kernels.reference import scale_rows_by_inv_rms
from pagedllm.layers.layer_kernels import KernelOp
from pagedllm.layers.norm import NormScale


class SiluAndMul(KernelOp, nn.Module):
    """x = | gate | up | along the last dim -> silu(gate) * up.

    With `norm_scale` (h [T, H], eps) (a model whose post-attention norm is folded into gate_up,
    models/norm_folding.py), gate and up are first multiplied by each row's 1 / rms(h)."""

    def __init__(self) -> None:
        super().__init__()
        self.bind_forward()

    def forward(self, x: torch.Tensor, norm_scale: NormScale | None = None) -> torch.Tensor:  # [T, 2I] -> [T, I]
        """Bound to one of the implementations below at construction (KernelOp)."""
        return self.forward_native(x, norm_scale)

    def forward_triton(self, x: torch.Tensor, norm_scale: NormScale | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.stride(-1) != 1:
            return self.forward_native(x, norm_scale)
        from pagedllm.kernels.triton.activation import silu_and_mul

        norm_input, eps = norm_scale if norm_scale is not None else (None, 0.0)
        return silu_and_mul(x, norm_input, eps)  # one pass, no float32 temporaries

    def forward_cpu(self, x: torch.Tensor, norm_scale: NormScale | None = None) -> torch.Tensor:
        if norm_scale is not None:
            x = scale_rows_by_inv_rms(x, *norm_scale)
        if x.dtype != torch.float32 or x.dim() != 2 or x.stride(-1) != 1 or not self.cpu_ops.has_avx512():
            return self.forward_native(x)
        return self.cpu_ops.silu_and_mul_f32(x)  # one pass instead of three ops (kernels/cpu/activation.cpp)

    def forward_native(self, x: torch.Tensor, norm_scale: NormScale | None = None) -> torch.Tensor:
        """The plain torch version: the reference for the fused kernels, and the path elsewhere."""
        if norm_scale is not None:
            x = scale_rows_by_inv_rms(x, *norm_scale)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
