"""Host microseconds to prepare a batch-1 / batch-64 decode step's inputs on the GPU machine,
split into the numpy build, the pinned upload, and its parts (copies, event)."""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pagedllm.core.scheduler_output import NewRequestData  # noqa: E402
from pagedllm.sampling_params import SamplingParams  # noqa: E402
from pagedllm.worker.input_buffers import InputBuffers  # noqa: E402
from pagedllm.worker.input_builder import build_model_input  # noqa: E402
from pagedllm.worker.request_states import RequestStates  # noqa: E402


def _us(fn, iters: int = 2000) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return 1e6 * (time.perf_counter() - start) / iters


def main() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    states = RequestStates(256, 4096, 256)
    for i in range(64):
        states.add(NewRequestData(str(i), list(range(100, 228)), [], SamplingParams(), list(range(9 * i, 9 * i + 9)), 128))
    buffers = InputBuffers(2048, 256, 256, cuda)
    for batch in (1, 64):
        ids = [str(i) for i in range(batch)]
        sched = [1] * batch
        arrays = (np.arange(batch), np.arange(batch), np.arange(batch), np.arange(batch),
                  np.arange(batch + 1, dtype=np.int32), np.ones(batch, dtype=np.int32),
                  np.zeros((batch, 256), dtype=np.int32))
        h64, d64 = buffers.i64_host[: 3 * 2048 + batch], buffers.i64[: 3 * 2048 + batch]
        ev = torch.cuda.Event()
        rows = {
            "numpy build (CPU tensors)": lambda: build_model_input(states, ids, sched, 16, cpu),
            "build + upload, graph-padded": lambda: build_model_input(states, ids, sched, 16, cuda, buffers, batch),
            "build + upload, eager": lambda: build_model_input(states, ids, sched, 16, cuda, buffers),
            "upload alone": lambda: buffers.upload(*arrays, pad_to=batch),
            "one pinned copy_": lambda: d64.copy_(h64, non_blocking=True),
            "event record + synchronize": lambda: (ev.record(), ev.synchronize()),
            "torch slice": lambda: buffers.i64[:batch],
        }
        for name, fn in rows.items():
            print(f"batch {batch:3d}  {name:32s} {_us(fn):8.1f} us")


if __name__ == "__main__":
    main()
