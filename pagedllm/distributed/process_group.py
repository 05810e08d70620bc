"""Joining the ranks of one engine: torch.distributed's default group over TCP on this host, gloo
on the CPU and NCCL on CUDA (the platform's choice), with a timeout so that a lost peer becomes an
error rather than a hang."""
from __future__ import annotations

import datetime
import socket
from typing import Any

import torch
import torch.distributed as dist

from pagedllm.distributed.parallel_state import PipelineStage, TensorParallelGroup

_host_comms: list[Any] = []  # this process's shared-memory exchanges, closed when it leaves
# Each rank's slot of the shared-memory exchange: a decode step's hidden rows and logits, and the
# hidden rows of prompt steps up to a few thousand tokens (larger messages take gloo).
SHM_SLOT_BYTES = 16 << 20
# How long a collective waits for a peer before failing. The executor notices a dead worker
# process within a moment and ends the engine; this bounds what the surviving ranks wait.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)


def free_port() -> int:
    """A TCP port nothing listens on now, for the ranks' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def init_parallel(rank: int, tp_size: int, pp_size: int, port: int, backend: str,
                  device: torch.device | None = None, host: str = "127.0.0.1",
                  shared_memory: bool = False) -> tuple[TensorParallelGroup, PipelineStage]:
    """Join the world of tp_size x pp_size ranks and return this rank's tensor-parallel group and
    pipeline stage (rank = stage * tp_size + tp_rank). `backend`: "gloo" or "nccl"; `device`: the
    rank's CUDA device, for NCCL; `host`: where rank 0 listens for the rendezvous (another
    machine's address under Ray); `shared_memory`: the ranks share this host, and their
    tensor-parallel collectives go through shared memory where they fit (the CPU path)."""
    world = tp_size * pp_size
    dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=rank, world_size=world,
                            timeout=COLLECTIVE_TIMEOUT, device_id=device if backend == "nccl" else None)
    stage, tp_rank = divmod(rank, tp_size)
    if pp_size == 1:
        tp_group, pipeline = dist.group.WORLD, PipelineStage()
    else:
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
        pipeline = PipelineStage(stage, pp_size, stage_ranks, pp_group)
    host_comm = None
    if shared_memory and tp_size > 1:
        from pagedllm.distributed.shm_comm import SharedMemoryComm

        name = f"pagedllm-{port}-tp{stage}"  # the rendezvous port: this engine's
        if tp_rank == 0:
            host_comm = SharedMemoryComm(name, tp_rank, tp_size, SHM_SLOT_BYTES, create=True)
        dist.barrier(group=tp_group)  # the segment exists before the others attach
        if tp_rank != 0:
            host_comm = SharedMemoryComm(name, tp_rank, tp_size, SHM_SLOT_BYTES, create=False)
    if host_comm is not None:
        _host_comms.append(host_comm)
    return TensorParallelGroup(tp_rank, tp_size, tp_group, host_comm), pipeline


def destroy_process_group() -> None:
    """Leave the ranks: the process group, and the shared-memory segments (the creator removes them)."""
    while _host_comms:
        _host_comms.pop().close()
    if dist.is_initialized():
        dist.destroy_process_group()
