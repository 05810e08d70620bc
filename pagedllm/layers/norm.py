"""RMSNorm, with the residual add fused in like vLLM's: norm(x + residual) also returns the sum."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pagedllm.kernels.cpu import cpu_kernels_for
from pagedllm.kernels.triton import triton_applies
from pagedllm.layers.loadable import HFWeightLoadable, copy_checked, new_param


class RMSNorm(HFWeightLoadable):
    def __init__(self, hidden_size: int, eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.eps = eps
        self.weight = new_param(hidden_size, dtype=dtype)  # [H]

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        # Normalize in float32, cast back, then scale: the same order as HF's LlamaRMSNorm, so
        # bf16/fp16 results match it.
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None  # [..., H] each
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """norm(x) without residual; (norm(x + residual), x + residual) with one."""
        if triton_applies(x) and _triton_layout_ok(x, residual):
            from pagedllm.kernels.triton.rms_norm import rms_norm

            # One kernel instead of four ops (add, rms_norm, cast, scale), as on the CPU.
            out, new_residual = rms_norm(x, self.weight, self.eps, residual)
            return out if new_residual is None else (out, new_residual)
        kernels = cpu_kernels_for(x)
        if kernels is not None and _kernel_layout_ok(x, residual):
            # One op instead of four (add, rms_norm, cast, scale): per-op cost dominates at small batch.
            outs = kernels.rms_norm(x, residual, self.weight, self.eps)
            return outs[0] if residual is None else (outs[0], outs[1])
        return self.forward_native(x, residual)

    def forward_native(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The plain torch version: the reference for the fused kernel, and the path elsewhere."""
        if residual is None:
            return self._norm(x)
        x = x + residual
        return self._norm(x), x

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        return [("weight", None)]

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        if attr != "weight" or shard is not None:
            raise ValueError(f"Unexpected norm parameter {attr!r}.")
        copy_checked(self.weight, tensor, "norm weight")



def scale_rows_by_inv_rms(x: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, ...] (rows of a projection of h's un-normalised rows, models/norm_folding.py) times
    each row's 1 / rms(h): a folded RMSNorm's scale, applied after the projection. The torch
    version, a new tensor rounded to x's dtype; CUDA takes kernels/triton/norm_scale.py."""
    inv = torch.rsqrt(h[:x.shape[0]].float().pow(2).mean(-1) + eps)
    return (x.float() * inv.view(-1, *[1] * (x.dim() - 1))).to(x.dtype)


def _kernel_layout_ok(x: torch.Tensor, residual: torch.Tensor | None) -> bool:
    return x.is_contiguous() and (residual is None or (residual.dtype == x.dtype and residual.is_contiguous()))


def _triton_layout_ok(x: torch.Tensor, residual: torch.Tensor | None) -> bool:
    if x.dim() != 2 or x.stride(-1) != 1:
        return False
    return residual is None or (residual.shape == x.shape and residual.dtype == x.dtype and residual.stride(-1) == 1)
