"""All-reduce and all-gather between the ranks of one host through shared memory (the CPU path).

gloo's loopback TCP takes about half a millisecond for a decode step's 4 KB all-reduce on a small
host (RESULTS.md), and a tensor-parallel step does two per layer. Here each rank copies its tensor
into its own slot of a shared segment, raises its counter, and waits (spinning) until every rank's
counter has reached the operation's number; then every rank reads all slots and sums them in rank
order (so every rank gets the same bits, as the layers need: their residual streams stay equal).
Slots alternate between two halves by the operation's parity, so one wait per operation suffices:
a rank writes a half again only after every rank has finished the operation that last read it.

Layout of the segment:  | counters, one cache line per rank | half 0: a slot per rank | half 1 |

Ordering relies on x86's store order (data before counter, seen in that order); messages larger
than a slot go through the process group (gloo) instead.
"""
from __future__ import annotations

import time
from multiprocessing import shared_memory

import numpy as np
import torch

_LINE = 64  # bytes: one counter per cache line
# A peer that never arrives: long enough for any step, short enough to fail rather than hang
# (the executor stops every worker at once when one dies).
_TIMEOUT_S = 60.0


class SharedMemoryComm:
    def __init__(self, name: str, rank: int, world_size: int, slot_bytes: int, create: bool) -> None:
        """`create`: this rank makes the segment (the others attach once it exists)."""
        self.rank, self.world_size = rank, world_size
        self.slot_bytes = -(-slot_bytes // _LINE) * _LINE
        size = world_size * _LINE + 2 * world_size * self.slot_bytes
        self._owner = create
        # (the ranks are processes of one parent, sharing its resource tracker: attaching registers
        # the name there again, which changes nothing, and the creator's unlink unregisters it)
        self._shm = shared_memory.SharedMemory(name=name, create=create, size=size if create else 0)
        buf = self._shm.buf
        assert buf is not None
        counters = np.frombuffer(buf, dtype=np.int64, count=world_size * _LINE // 8)
        self._counters = counters[:: _LINE // 8]  # [world]
        if create:
            self._counters[:] = 0
        self._data = torch.frombuffer(buf, dtype=torch.uint8, offset=world_size * _LINE)
        self._seq = 0

    def fits(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and x.is_contiguous() and x.numel() * x.element_size() <= self.slot_bytes

    def all_reduce_(self, x: torch.Tensor) -> torch.Tensor:
        """x (contiguous) summed over the ranks, in rank order, in place."""
        slots = self._exchange(x)
        if self.world_size == 2:
            torch.add(slots[0], slots[1], out=x.view(-1))
        else:
            torch.sum(torch.stack(slots), dim=0, out=x.view(-1))
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The ranks' x side by side along `dim`, in rank order."""
        slots = self._exchange(x)
        return torch.cat([s.view(x.shape) for s in slots], dim=dim)

    def _exchange(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Write x to this rank's slot, wait for every rank's, and return all slots as flat views."""
        self._seq += 1
        half = self._seq % 2
        nbytes = x.numel() * x.element_size()
        base = half * self.world_size * self.slot_bytes

        def slot(rank: int) -> torch.Tensor:
            start = base + rank * self.slot_bytes
            return self._data[start:start + nbytes].view(x.dtype)

        slot(self.rank).copy_(x.reshape(-1))
        self._counters[self.rank] = self._seq
        self._wait(self._seq)
        return [slot(r) for r in range(self.world_size)]

    def _wait(self, seq: int) -> None:
        counters = self._counters
        spins = 0
        deadline = 0.0
        while counters.min() < seq:
            spins += 1
            if spins & 0x3FFF == 0:
                now = time.monotonic()
                deadline = deadline or now + _TIMEOUT_S
                if now > deadline:
                    raise RuntimeError(f"Rank {self.rank}: a peer did not reach shared-memory operation {seq} within "
                                       f"{_TIMEOUT_S:.0f} s.")

    def close(self) -> None:
        self._counters = self._data = None  # type: ignore[assignment]  # views must go before the buffer
        self._shm.close()
        if self._owner:
            self._shm.unlink()
