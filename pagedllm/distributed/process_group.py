"""Joining the ranks of one engine: torch.distributed's default group over TCP on this host, gloo
on the CPU and NCCL on CUDA (the platform's choice), with a timeout so that a lost peer becomes an
error rather than a hang."""
from __future__ import annotations

import datetime
import socket

import torch
import torch.distributed as dist

from pagedllm.distributed.parallel_state import TensorParallelGroup

# How long a collective waits for a peer before failing. The executor notices a dead worker
# process within a moment and ends the engine; this bounds what the surviving ranks wait.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)


def free_port() -> int:
    """A TCP port nothing listens on now, for the ranks' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def init_tensor_parallel(rank: int, world_size: int, port: int, backend: str,
                         device: torch.device | None = None, host: str = "127.0.0.1") -> TensorParallelGroup:
    """Join the world of `world_size` ranks (all of them one tensor-parallel group) and return
    this rank's group. `backend`: "gloo" or "nccl"; `device`: the rank's CUDA device, for NCCL;
    `host`: where rank 0 listens for the rendezvous (another machine's address under Ray)."""
    dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=rank, world_size=world_size,
                            timeout=COLLECTIVE_TIMEOUT, device_id=device if backend == "nccl" else None)
    return TensorParallelGroup(rank, world_size, dist.group.WORLD)


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
