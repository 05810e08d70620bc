"""The tensor-parallel group a model is built for, and its collectives.

A worker builds its model inside `use_tensor_parallel(group)` (worker/worker.py); the parallel
layers (layers/parallel_linear.py, layers/embedding.py) take the group at construction and are the
only code that calls its collectives. Outside any scope the group is the single rank: the layers
then hold whole weights and never communicate, so one-device engines run exactly as before.
"""
from __future__ import annotations

import contextlib
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

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.size:
            raise ValueError(f"tensor-parallel rank {self.rank} is outside 0..{self.size - 1}.")

    def all_reduce_(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over the ranks, in place; returns x."""
        if self.size > 1:
            import torch.distributed as dist

            dist.all_reduce(x, group=self.group)
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The ranks' x side by side along `dim`, in rank order (every rank's x has one shape)."""
        if self.size == 1:
            return x
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=dim)


SINGLE_RANK = TensorParallelGroup()
_current: Scoped[TensorParallelGroup] = Scoped()


def use_tensor_parallel(group: TensorParallelGroup) -> contextlib.AbstractContextManager[TensorParallelGroup]:
    """Layers built inside this scope split their weights over `group`."""
    return _current.use(group)


def current_tensor_parallel() -> TensorParallelGroup:
    return _current.value or SINGLE_RANK


def divide(total: int, parts: int, what: str) -> int:
    """total / parts, or ValueError naming `what` when it does not divide."""
    if total % parts:
        raise ValueError(f"{what} ({total}) is not divisible by tensor_parallel_size ({parts}).")
    return total // parts
