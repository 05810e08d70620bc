"""What tensor parallelism's collectives cost on this host's CPU (issue 23): two processes, as the
mp executor runs them, timing the all-reduce of a decode step's hidden rows and the all-gather of
its logits, over gloo's loopback TCP and over the shared-memory exchange (RESULTS.md).

    python benchmarks/bench_cpu_collectives.py [--hidden 1024] [--vocab 151936] [--rows 1 16]
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.multiprocessing as mp


def _run(rank: int, args: argparse.Namespace, port: int) -> None:

    from pagedllm.distributed.process_group import init_parallel

    torch.set_num_threads(1)
    tp, _ = init_parallel(rank, 2, 1, port, "gloo", shared_memory=True)
    for via in ("gloo", "shared memory"):
        _time(rank, args, tp if via == "shared memory" else dataclasses.replace(tp, host_comm=None), via)
    from pagedllm.distributed.process_group import destroy_process_group

    destroy_process_group()


def _time(rank: int, args: argparse.Namespace, tp, via: str) -> None:
    import torch.distributed as dist

    for rows in args.rows:
        hidden = torch.randn(rows, args.hidden)
        logits = torch.randn(rows, args.vocab // 2)
        for name, x in (("all_reduce hidden", hidden), ("all_gather logits", logits)):
            op = tp.all_reduce_ if name.startswith("all_reduce") else tp.all_gather
            for _ in range(20):
                op(x)
            dist.barrier()
            start = time.perf_counter()
            for _ in range(args.iters):
                op(x)
            us = 1e6 * (time.perf_counter() - start) / args.iters
            if rank == 0:
                print(f"{via}: {name} [{rows} x {x.shape[1]}] fp32: {us:.0f} us", flush=True)


def main() -> None:
    from pagedllm.distributed.process_group import free_port

    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()
    mp.spawn(_run, args=(args, free_port()), nprocs=2)


if __name__ == "__main__":
    main()
