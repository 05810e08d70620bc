"""The torch versions of the small computations that kernels fuse: the references the layers'
native paths, the torch attention backend and the kernel tests share, so each is written once.

Roundings follow HF transformers (normalise in float32, cast back, then scale), so bf16/fp16
results match it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_rows(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * normalise(x) over the last dim ([..., D] -> [..., D]), as HF's LlamaRMSNorm."""
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * normed.to(x.dtype)


def scale_rows_by_inv_rms(x: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, ...] (rows of a projection of h's un-normalised rows, models/norm_folding.py) times
    each row's 1 / rms(h): a folded RMSNorm's scale, applied after the projection. A new tensor,
    the product taken in float32 and rounded to x's dtype once (kernels/triton/norm_scale.py)."""
    inv = torch.rsqrt(h[:x.shape[0]].float().pow(2).mean(-1) + eps)
    return (x.float() * inv.view(-1, *[1] * (x.dim() - 1))).to(x.dtype)


def rotary_neox(positions: torch.Tensor, x: torch.Tensor, cos_sin_cache: torch.Tensor,
                head_size: int) -> torch.Tensor:
    """x [T, heads * head_size] rotated by its tokens' positions (neox: each head's first and
    second halves of its rotary part rotate as pairs, HF's rotate_half); cos_sin_cache
    [max_position, rotary_dim] float32 as | cos | sin |. A new tensor; dims past rotary_dim stay."""
    num_tokens, rotary_dim = x.shape[0], cos_sin_cache.shape[-1]
    cos, sin = cos_sin_cache[positions].to(x.dtype).unsqueeze(1).chunk(2, dim=-1)  # [T, 1, rot/2]
    heads = x.view(num_tokens, -1, head_size)
    rot, rest = heads[..., :rotary_dim], heads[..., rotary_dim:]
    x1, x2 = rot.chunk(2, dim=-1)
    # HF: x * cos + rotate_half(x) * sin, with rotate_half(x) = | -x2 | x1 |
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    if rest.shape[-1]:
        rotated = torch.cat([rotated, rest], dim=-1)
    return rotated.reshape(num_tokens, -1)
