"""The tensor-parallel group and the pipeline stage a model is built for, and their collectives.

A worker builds its model inside `use_parallel(tp, stage)` (worker/worker.py); the parallel layers
(layers/parallel_linear.py, layers/embedding.py, layers/pipeline.py) take them at construction and
are the only code that communicates. Outside any scope they are the single rank and the single
stage: the layers then hold whole weights and never communicate, so one-device engines run exactly
as before.

Ranks: world = tensor_parallel_size x pipeline_parallel_size, rank = stage * tp_size + tp_rank.
The ranks of one stage form its tensor-parallel group; the ranks of one tp_rank across the stages
pass hidden states forward (point to point) and take the last stage's logits (a broadcast).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pagedllm.scoped import Scoped


@dataclass(frozen=True)
class TensorParallelGroup:
    """This rank's place among the ranks that split every layer, and their process group."""

    rank: int = 0
    size: int = 1
    group: Any = None  # torch.distributed ProcessGroup of these ranks; None for a single rank
    # ranks of one host on the CPU: their shared-memory exchange (distributed/shm_comm.py), which
    # takes every message that fits its slots; the process group takes the rest
    host_comm: Any = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.size:
            raise ValueError(f"tensor-parallel rank {self.rank} is outside 0..{self.size - 1}.")

    def all_reduce_(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over the ranks, in place; returns x."""
        if self.size > 1:
            if self.host_comm is not None and self.host_comm.fits(x):
                return self.host_comm.all_reduce_(x)
            import torch.distributed as dist

            dist.all_reduce(x, group=self.group)
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The ranks' x side by side along `dim`, in rank order (every rank's x has one shape)."""
        if self.size == 1:
            return x
        if self.host_comm is not None and self.host_comm.fits(x):
            return self.host_comm.all_gather(x, dim)
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=dim)


@dataclass(frozen=True)
class PipelineStage:
    """This rank's stage: which of the model's layers it holds, and its peers in the stages
    before and after (global ranks of the same tp_rank)."""

    stage: int = 0
    size: int = 1
    ranks: tuple[int, ...] = (0,)  # the global rank of this tp_rank at each stage
    group: Any = None  # their process group (the last stage's logits reach the others through it)

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.size - 1

    def layer_range(self, num_layers: int) -> tuple[int, int]:
        """[start, end) of the decoder layers this stage holds: equal parts, the earlier stages
        taking one more where they do not divide (the last also holds the norm and LM head)."""
        if num_layers < self.size:
            raise ValueError(f"pipeline_parallel_size ({self.size}) is larger than the number of layers "
                             f"({num_layers}).")
        base, extra = divmod(num_layers, self.size)
        start = self.stage * base + min(self.stage, extra)
        return start, start + base + (1 if self.stage < extra else 0)

    def send_next(self, x: torch.Tensor) -> None:
        """x to the next stage (same tp_rank)."""
        import torch.distributed as dist

        dist.send(x.contiguous(), self.ranks[self.stage + 1])

    def recv_prev(self, x: torch.Tensor) -> torch.Tensor:
        """Fill x (its shape and dtype agreed) from the previous stage; returns x."""
        import torch.distributed as dist

        dist.recv(x, self.ranks[self.stage - 1])
        return x

    def broadcast_from_last(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's x on every stage, in place; returns x."""
        if self.size > 1:
            import torch.distributed as dist

            dist.broadcast(x, self.ranks[-1], group=self.group)
        return x


SINGLE_RANK = TensorParallelGroup()
SINGLE_STAGE = PipelineStage()
_current: Scoped[TensorParallelGroup] = Scoped()
_stage: Scoped[PipelineStage] = Scoped()


@contextlib.contextmanager
def use_parallel(tp: TensorParallelGroup, stage: PipelineStage = SINGLE_STAGE) -> Iterator[None]:
    """Layers built inside this scope split their weights over `tp` and hold `stage`'s layers."""
    with _current.use(tp), _stage.use(stage):
        yield


def current_tensor_parallel() -> TensorParallelGroup:
    return _current.value or SINGLE_RANK


def current_pipeline_stage() -> PipelineStage:
    return _stage.value or SINGLE_STAGE


def divide(total: int, parts: int, what: str) -> int:
    """total / parts, or ValueError naming `what` when it does not divide."""
    if total % parts:
        raise ValueError(f"{what} ({total}) is not divisible by tensor_parallel_size ({parts}).")
    return total // parts
