"""Structured outputs' token masks on the logits: row r of the bitmask allows token t where bit
t % 32 of word t // 32 is set (xgrammar's layout); every other token's logit becomes -inf before
any sampling step sees it (so temperature, top-k/p, logprobs and the rejection rule all see the
constrained distribution)."""
from __future__ import annotations

import numpy as np
import torch

_BITS: dict[torch.device, torch.Tensor] = {}


def apply_token_bitmask_(logits: torch.Tensor, bitmask: np.ndarray, rows: list[int]) -> None:
    """In place: logits [S, V] rows `rows` masked by bitmask [len(rows), ceil(V / 32)] int32."""
    if not rows:
        return
    device = logits.device
    bits = _BITS.get(device)
    if bits is None:
        bits = _BITS[device] = torch.arange(32, dtype=torch.int32, device=device)
    words = torch.from_numpy(bitmask).to(device, non_blocking=True)  # [R, W]
    vocab = logits.shape[1]
    allowed = ((words.unsqueeze(-1) >> bits) & 1).view(len(rows), -1)[:, :vocab].bool()  # [R, V]
    index = torch.tensor(rows, dtype=torch.int64, device=device)
    masked = logits.index_select(0, index).masked_fill_(~allowed, float("-inf"))
    logits.index_copy_(0, index, masked)
