"""The MLA decode kernel (kernels/triton/mla_decode.py) against its torch reference, and the
Triton backend's latent path against the torch backend's, under the interpreter on CPU tensors or
compiled on a GPU: uneven lengths, block sizes that do not divide them, heads not a multiple of the
head block, and split-K."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.attention.base import AttentionBackendOptions, AttentionMetadata  # noqa: E402
from pagedllm.attention.registry import create_backend  # noqa: E402
from pagedllm.attention.torch_ref import TorchAttentionBackend  # noqa: E402
from pagedllm.kernels.triton.mla_decode import mla_decode, mla_decode_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = 1e-4 if DEVICE == "cuda" else 1e-5  # float32 runs in full precision (not tf32) on a GPU too
RANK, ROPE, HEADS = 32, 8, 5


def _case(seq_lens: list[int], block_size: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    max_blocks = max(-(-n // block_size) for n in seq_lens)
    num_blocks = len(seq_lens) * max_blocks + 2
    table = torch.randperm(num_blocks, generator=gen)[: len(seq_lens) * max_blocks].view(len(seq_lens), -1).int()
    cache = torch.randn(num_blocks, block_size, 1, RANK + ROPE, generator=gen)
    query = torch.randn(len(seq_lens), HEADS, RANK + ROPE, generator=gen)
    return query, cache, table, torch.tensor(seq_lens, dtype=torch.int32)


@pytest.mark.parametrize("block_size", [16, 5])
@pytest.mark.parametrize("num_splits", [1, 3])
def test_kernel_equals_the_reference(block_size, num_splits):
    query, cache, table, lens = _case([1, 17, 40, 70], block_size, seed=block_size + num_splits)
    want = mla_decode_reference(query, cache, table, lens, RANK, 0.3)
    got = mla_decode(*(t.to(DEVICE) for t in (query, cache, table, lens)), RANK, 0.3, num_splits)
    torch.testing.assert_close(got.cpu(), want, atol=TOL, rtol=TOL)


def test_the_triton_backends_latent_path_equals_the_torch_backends():
    """A decode step: the new rows written once (K and V halves are the same memory), then the
    kernel; the torch backend attends over K = V = the rows and cuts the output."""
    seq_lens, block_size = [3, 20, 33], 16
    query, cache, table, lens = _case(seq_lens, block_size, seed=7)
    rows = torch.randn(len(seq_lens), RANK + ROPE)
    slots = torch.tensor([int(table[i, (n - 1) // block_size]) * block_size + (n - 1) % block_size
                          for i, n in enumerate(seq_lens)])
    md = AttentionMetadata(
        num_actual_tokens=3, num_reqs=3, query_start_loc=torch.arange(4, dtype=torch.int32), seq_lens=lens,
        block_table=table, slot_mapping=slots, max_query_len=1, max_seq_len=max(seq_lens), block_size=block_size,
        query_start_loc_cpu=[0, 1, 2, 3], seq_lens_cpu=seq_lens)
    shared = cache.unsqueeze(0).expand(2, *cache.shape)  # as the worker allocates a latent cache
    want = TorchAttentionBackend().forward_latent(query, rows, shared.clone(), md, 0.3, RANK)
    backend = create_backend("triton", AttentionBackendOptions(max_num_seqs=8, max_model_len=64))
    to = (lambda t: t.to(DEVICE))
    md_dev = AttentionMetadata(**{**md.__dict__, "query_start_loc": to(md.query_start_loc), "seq_lens": to(lens),
                                  "block_table": to(table), "slot_mapping": to(slots), "backend_cache": {}})
    cache_dev = to(cache)
    got = backend.forward_latent(to(query), to(rows), cache_dev.unsqueeze(0).expand(2, *cache.shape), md_dev, 0.3,
                                 RANK)
    torch.testing.assert_close(got.cpu(), want, atol=TOL, rtol=TOL)
    assert torch.equal(cache_dev.view(-1, RANK + ROPE)[slots.to(DEVICE)].cpu(), rows)  # the new rows written
