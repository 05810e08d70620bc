"""Joining the ranks of one engine: torch.distributed's default group over TCP on this host, gloo
on the CPU and NCCL on CUDA (the platform's choice), with a timeout so that a lost peer becomes an
error rather than a hang."""
from __future__ import annotations

import datetime
import socket

import torch
import torch.distributed as dist

from pagedllm.distributed.parallel_state import PipelineStage, TensorParallelGroup

# How long a collective waits for a peer before failing. The executor notices a dead worker
# process within a moment and ends the engine; this bounds what the surviving ranks wait.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)


def free_port() -> int:
    """A TCP port nothing listens on now, for the ranks' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def init_parallel(rank: int, tp_size: int, pp_size: int, port: int, backend: str,
                  device: torch.device | None = None,
                  host: str = "127.0.0.1") -> tuple[TensorParallelGroup, PipelineStage]:
    """Join the world of tp_size x pp_size ranks and return this rank's tensor-parallel group and
    pipeline stage (rank = stage * tp_size + tp_rank). `backend`: "gloo" or "nccl"; `device`: the
    rank's CUDA device, for NCCL; `host`: where rank 0 listens for the rendezvous (another
    machine's address under Ray)."""
    world = tp_size * pp_size
    dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=rank, world_size=world,
                            timeout=COLLECTIVE_TIMEOUT, device_id=device if backend == "nccl" else None)
    stage, tp_rank = divmod(rank, tp_size)
    if pp_size == 1:
        return TensorParallelGroup(tp_rank, tp_size, dist.group.WORLD), PipelineStage()
    tp_group = pp_group = None
    # Every rank creates every group, in the same order (new_group is collective).
    for s in range(pp_size):
        group = dist.new_group([s * tp_size + r for r in range(tp_size)])
        tp_group = group if s == stage else tp_group
    for r in range(tp_size):
        ranks = tuple(s * tp_size + r for s in range(pp_size))
        group = dist.new_group(list(ranks))
        if r == tp_rank:
            pp_group, stage_ranks = group, ranks
    return (TensorParallelGroup(tp_rank, tp_size, tp_group),
            PipelineStage(stage, pp_size, stage_ranks, pp_group))


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
