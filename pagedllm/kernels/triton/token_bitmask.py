"""Structured outputs' token masks on the GPU in one launch (sample/token_bitmask.py has the
layout and the torch reference the tests hold it to): a program per (masked row, block of the
vocabulary) sets the logits of the tokens its bitmask row disallows to -inf.

    logits    [S, V] float32, last dim contiguous: the step's sampled rows
    bitmask   [R, W] int32, W = ceil(V / 32): bit t % 32 of word t // 32 allows token t
    rows      [R] int32: the logits row each bitmask row masks

The host hands over its rows and words in one pinned buffer copied without waiting (no host sync
in the step); xgrammar's own CUDA kernel is compiled at first use, this one with the others.
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

BLOCK = 2048


@triton.jit
def _mask_kernel(logits_ptr, logits_stride, words_ptr, num_words, rows_ptr, V, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < V
    row = tl.load(rows_ptr + i).to(tl.int64)
    words = tl.load(words_ptr + i * num_words + offs // 32, mask=inside, other=-1)
    allowed = ((words >> (offs % 32)) & 1) != 0
    tl.store(logits_ptr + row * logits_stride + offs, float("-inf"), mask=inside & ~allowed)


def apply_token_bitmask_triton_(logits: torch.Tensor, bitmask: np.ndarray, rows: list[int]) -> None:
    """In place, as sample/token_bitmask.apply_token_bitmask_: logits [S, V] rows `rows` masked by
    bitmask [len(rows), ceil(V / 32)] int32 (host)."""
    if not rows:
        return
    assert logits.stride(-1) == 1 and bitmask.shape[0] == len(rows)
    num_words = bitmask.shape[1]
    # rows then words, one copy; pinned so the copy is queued and the host goes on (torch's pinned
    # allocator keeps the block until the copy has run)
    packed = np.empty(len(rows) * (1 + num_words), dtype=np.int32)
    packed[: len(rows)] = rows
    packed[len(rows):] = bitmask.reshape(-1)
    host = torch.from_numpy(packed)
    if logits.is_cuda:
        host = host.pin_memory()
    device = host.to(logits.device, non_blocking=True)
    grid = (len(rows), triton.cdiv(logits.shape[1], BLOCK))
    _mask_kernel[grid](logits, logits.stride(0), device[len(rows):], num_words, device, logits.shape[1],
                       BLOCK=BLOCK)
