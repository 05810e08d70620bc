"""Structured outputs' token masks on the logits: row r of the bitmask allows token t where bit
t % 32 of word t // 32 is set (xgrammar's layout); every other token's logit becomes -inf before
any sampling step sees it (so temperature, top-k/p, logprobs and the rejection rule all see the
constrained distribution). xgrammar's own kernels do it (C++ on the CPU, its GPU kernel on CUDA)."""
from __future__ import annotations

import numpy as np
import torch


def apply_token_bitmask_(logits: torch.Tensor, bitmask: np.ndarray, rows: list[int]) -> None:
    """In place: logits [S, V] rows `rows` masked by bitmask [len(rows), ceil(V / 32)] int32."""
    import xgrammar as xgr

    if not rows:
        return
    # xgrammar's kernel reads bitmask row i for logits row i: spread the rows out (the others, never
    # read, stay allowed)
    full = np.full((logits.shape[0], bitmask.shape[1]), -1, dtype=np.int32)
    full[rows] = bitmask
    words = torch.from_numpy(full).to(logits.device, non_blocking=True)
    xgr.apply_token_bitmask_inplace(logits, words, indices=rows)


def token_bitmask_reference(logits: torch.Tensor, bitmask: np.ndarray, rows: list[int]) -> torch.Tensor:
    """The masking spelled out in torch ops (tests check the kernels against it)."""
    out = logits.clone()
    words = torch.from_numpy(bitmask).to(torch.int64)
    allowed = ((words.unsqueeze(-1) >> torch.arange(32)) & 1).view(len(rows), -1)[:, : logits.shape[1]].bool()
    for i, row in enumerate(rows):
        out[row] = out[row].masked_fill(~allowed[i].to(out.device), float("-inf"))
    return out
