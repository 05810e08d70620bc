"""Gated activations for merged gate_up projections."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagedllm.kernels.cpu import avx512_kernels
from pagedllm.kernels.triton import triton_applies
from pagedllm.layers.norm import scale_rows_by_inv_rms


class SiluAndMul(nn.Module):
    """x = | gate | up | along the last dim -> silu(gate) * up."""

    def forward(self, x: torch.Tensor, norm_input: torch.Tensor | None = None, eps: float = 0.0) -> torch.Tensor:
        """[T, 2I] -> [T, I]. With `norm_input` h [T, H] (a model whose post-attention norm is
        folded into gate_up, models/norm_folding.py), gate and up are first multiplied by each
        row's 1 / rms(h)."""
        if triton_applies(x) and x.dim() == 2 and x.stride(-1) == 1:
            from pagedllm.kernels.triton.activation import silu_and_mul

            return silu_and_mul(x, norm_input, eps)  # one pass, no float32 temporaries
        if norm_input is not None:
            return self.forward_native(scale_rows_by_inv_rms(x, norm_input, eps))
        if x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 2 and x.stride(-1) == 1:
            kernels = avx512_kernels()
            if kernels is not None:
                return kernels.silu_and_mul_f32(x)  # one pass instead of three ops (kernels/cpu/activation.cpp)
        return self.forward_native(x)

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:  # [T, 2I] -> [T, I]
        """The plain torch version: the reference for the fused kernel, and the CPU path."""
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
