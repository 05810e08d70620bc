"""The small protocol layers use to take Hugging Face tensors, so models can load by name and
report exactly which weights a checkpoint is missing."""
from __future__ import annotations

import torch
from torch import nn


class HFWeightLoadable(nn.Module):
    """A layer whose parameters are filled from HF checkpoint tensors.

    A key is (attr, shard): attr is the HF name's last part ("weight", "bias"); shard names the
    part of a merged parameter (e.g. "q" of a fused QKV projection), None for plain parameters.
    """

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        """Every (attr, shard) this layer needs before it can run."""
        raise NotImplementedError

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        """Copy one HF tensor (in HF's layout and any dtype) into this layer's parameters."""
        raise NotImplementedError


def new_param(*shape: int, dtype: torch.dtype) -> nn.Parameter:
    """An uninitialized inference-only parameter on the current default device."""
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


def copy_checked(dst: torch.Tensor, src: torch.Tensor, what: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"Shape mismatch loading {what}: checkpoint has {tuple(src.shape)}, "
                         f"model expects {tuple(dst.shape)}.")
    dst.copy_(src)
