"""Device tensors on their way to host memory, without making the host wait for them yet.

`.tolist()` on a CUDA tensor waits for everything queued on the stream. With asynchronous
scheduling the next step is queued behind this one by the time its tokens are read, so a plain
`.tolist()` would wait for that step too. Instead the copy into pinned memory is queued right
after the tensors are computed, an event marks its end, and `wait()` waits for that event only.
On the CPU the tensors are already host tensors and nothing is copied.
"""
from __future__ import annotations

import torch


class HostCopy:
    def __init__(self, tensors: list[torch.Tensor]) -> None:
        if not tensors or tensors[0].device.type == "cpu":
            self._host = tensors
            self._event: torch.cuda.Event | None = None
            return
        self._host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for host, t in zip(self._host, tensors):
            host.copy_(t, non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()

    def wait(self) -> list[torch.Tensor]:
        """The host tensors, once their copies are done."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._host
