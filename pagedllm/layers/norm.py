"""RMSNorm, with the residual add fused in like vLLM's: norm(x + residual) also returns the sum."""
from __future__ import annotations

import torch
import torch.nn.functional as F

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
