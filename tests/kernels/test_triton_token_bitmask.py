"""The Triton token-mask kernel (kernels/triton/token_bitmask.py) against the masking spelled out
(sample/token_bitmask.token_bitmask_reference), under the interpreter on CPU tensors or compiled on
a GPU; and the CUDA platform hands it to the runner."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from pagedllm.kernels.triton.token_bitmask import BLOCK, apply_token_bitmask_triton_
from pagedllm.sample.token_bitmask import token_bitmask_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("vocab", [33, 100, BLOCK + 77])  # one word and a bit; a short last block
def test_kernel_equals_the_reference(vocab):
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(6, vocab, generator=gen)
    words = -(-vocab // 32)
    bitmask = np.random.default_rng(vocab).integers(-2**31, 2**31, (3, words), dtype=np.int64).astype(np.int32)
    bitmask[1] = 0
    bitmask[1, 0] = np.int32(-2**31)  # one token allowed, the sign bit's
    rows = [5, 0, 3]
    want = token_bitmask_reference(logits, bitmask, rows)
    got = logits.to(DEVICE)
    apply_token_bitmask_triton_(got, bitmask, rows)
    assert torch.equal(got.cpu(), want)
    assert torch.isfinite(got[0]).sum() == 1 and torch.isfinite(got[0, 31])
    assert torch.equal(got[1].cpu(), logits[1])  # rows not listed are untouched


def test_no_rows_is_a_no_op():
    logits = torch.randn(2, 40)
    got = logits.to(DEVICE)
    apply_token_bitmask_triton_(got, np.zeros((0, 2), np.int32), [])
    assert torch.equal(got.cpu(), logits)


def test_the_cuda_platform_picks_it_with_triton_on():
    from pagedllm.config import KernelConfig
    from pagedllm.platforms.cuda import CudaPlatform
    from pagedllm.sample.token_bitmask import apply_token_bitmask_

    platform = CudaPlatform()
    assert platform.token_mask_stage(KernelConfig()) is apply_token_bitmask_triton_
    assert platform.token_mask_stage(KernelConfig(triton=False)) is apply_token_bitmask_
