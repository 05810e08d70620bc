"""The ranks' collectives in worker processes: the shared-memory exchange gives what gloo gives
(sums in rank order: the same bits on every rank), takes bf16 and odd shapes, and hands what does
not fit its slot to gloo; pipeline stages split the layers."""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from pagedllm.distributed.parallel_state import PipelineStage


def _check(rank: int, world: int, port: int, failures) -> None:
    import torch.distributed as dist

    from pagedllm.distributed import process_group
    from pagedllm.distributed.process_group import destroy_process_group, init_parallel

    process_group.SHM_SLOT_BYTES = 4096  # small: the last case below does not fit
    try:
        tp, _ = init_parallel(rank, world, 1, port, "gloo", shared_memory=True)
        assert tp.host_comm is not None
        for shape, dtype in [((3, 5), torch.float32), ((2, 7), torch.bfloat16), ((1, 1024), torch.float32),
                             ((4, 1000), torch.float32)]:  # 16 KB: through gloo
            gen = torch.Generator().manual_seed(100 + rank)
            x = torch.randn(shape, generator=gen).to(dtype)
            parts = [torch.randn(shape, generator=torch.Generator().manual_seed(100 + r)).to(dtype)
                     for r in range(world)]
            reduced = tp.all_reduce_(x.clone())
            torch.testing.assert_close(reduced, sum(p.float() for p in parts).to(dtype), rtol=1e-2, atol=1e-2)
            same = [torch.empty_like(reduced) for _ in range(world)]
            dist.all_gather(same, reduced)  # every rank holds the same bits
            assert all(torch.equal(s, reduced) for s in same)
            torch.testing.assert_close(tp.all_gather(x, dim=-1), torch.cat(parts, dim=-1))
            torch.testing.assert_close(tp.all_gather(x, dim=0), torch.cat(parts, dim=0))
        destroy_process_group()
    except Exception as e:  # reported to the test's process
        failures.put(f"rank {rank}: {type(e).__name__}: {e}")


@pytest.mark.parametrize("world", [2, 3])
def test_shared_memory_collectives_equal_gloo(world):
    from pagedllm.distributed.process_group import free_port

    failures = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_check, args=(world, free_port(), failures), nprocs=world)
    assert failures.empty(), failures.get()


def test_stages_split_the_layers():
    ranges = [PipelineStage(s, 3, (0, 1, 2)).layer_range(8) for s in range(3)]
    assert ranges == [(0, 3), (3, 6), (6, 8)]
    with pytest.raises(ValueError, match="larger than the number of layers"):
        PipelineStage(0, 3, (0, 1, 2)).layer_range(2)
