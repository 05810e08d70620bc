"""RMSNorm, with the residual add fused in like vLLM's: norm(x + residual) also returns the sum."""
from __future__ import annotations

import torch

from pagedllm.kernels.reference import rms_norm_rows
from pagedllm.layers.layer_kernels import KernelOp
from pagedllm.layers.loadable import HFWeightLoadable, copy_checked, new_param

NormScale = tuple[torch.Tensor, float]  # (h [T, H], eps): rows to scale by 1 / rms(h) later


class RMSNorm(KernelOp, HFWeightLoadable):
    def __init__(self, hidden_size: int, eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.eps = eps
        self.weight = new_param(hidden_size, dtype=dtype)  # [H]
        self.bind_forward()

    def prepare(self, h: torch.Tensor) -> tuple[torch.Tensor, NormScale | None]:
        """What the projection after this norm reads, and the row scale its consumer applies:
        (norm(h), None). A norm folded into that projection (models/norm_folding.py) gives
        (h, (h, eps)) instead."""
        return self(h), None

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm_rows(x, self.weight, self.eps)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None  # [..., H] each
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """norm(x) without residual; (norm(x + residual), x + residual) with one. Bound to one of
        the implementations below at construction (KernelOp)."""
        return self.forward_native(x, residual)

    def forward_triton(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not _triton_layout_ok(x, residual):
            return self.forward_native(x, residual)
        from pagedllm.kernels.triton.rms_norm import rms_norm

        # One kernel instead of four ops (add, rms_norm, cast, scale), as on the CPU.
        out, new_residual = rms_norm(x, self.weight, self.eps, residual)
        return out if new_residual is None else (out, new_residual)

    def forward_cpu(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not _kernel_layout_ok(x, residual):
            return self.forward_native(x, residual)
        # One op instead of four (add, rms_norm, cast, scale): per-op cost dominates at small batch.
        outs = self.cpu_ops.rms_norm(x, residual, self.weight, self.eps)
        return outs[0] if residual is None else (outs[0], outs[1])

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


def _kernel_layout_ok(x: torch.Tensor, residual: torch.Tensor | None) -> bool:
    """What the C++ kernel takes: a contiguous 2-D float32/bfloat16 x (and residual like it)."""
    if x.dim() != 2 or x.dtype not in (torch.float32, torch.bfloat16) or not x.is_contiguous():
        return False
    return residual is None or (residual.dtype == x.dtype and residual.is_contiguous())


def _triton_layout_ok(x: torch.Tensor, residual: torch.Tensor | None) -> bool:
    if x.dim() != 2 or x.stride(-1) != 1:
        return False
    return residual is None or (residual.shape == x.shape and residual.dtype == x.dtype and residual.stride(-1) == 1)
