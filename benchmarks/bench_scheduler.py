"""Micro-benchmark: scheduler overhead per decode step (schedule() + update_from_output()).

No model: a fake runner output (one sampled token per request) is built outside the timed region.
Every request has a 32-token prompt and decodes one token per step; block size 16, so one step in
16 also hashes and caches a newly full block per request (prefix cache on). Times are medians in
microseconds, plus the mean of the total (which includes those block-boundary steps).

    python benchmarks/bench_scheduler.py [--steps 200] [--batch-sizes 1 64 256]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pagedllm.config import CacheConfig, SchedulerConfig
from pagedllm.core.request import Request
from pagedllm.core.scheduler import Scheduler
from pagedllm.outputs import ModelRunnerOutput
from pagedllm.sampling_params import SamplingParams

PROMPT_LEN = 32
BLOCK_SIZE = 16


def _make_scheduler(num_reqs: int, num_steps: int, caching: bool) -> Scheduler:
    max_model_len = PROMPT_LEN + num_steps + 64
    num_blocks = num_reqs * (-(-max_model_len // BLOCK_SIZE)) + 16
    sched = Scheduler(
        SchedulerConfig(max_num_seqs=max(num_reqs, 1), max_num_batched_tokens=max(8192, num_reqs * PROMPT_LEN),
                        max_model_len=max_model_len),
        CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=caching),
        num_blocks,
    )
    for i in range(num_reqs):
        prompt = [(i * 7919 + j) % 32000 for j in range(PROMPT_LEN)]
        params = SamplingParams(max_tokens=num_steps + 32, ignore_eos=True)
        sched.add_request(Request(f"r{i}", prompt, params, eos_token_id=2, max_tokens=num_steps + 32))
    return sched


def _fake_runner_output(sched_out_req_ids: list[str], token: int) -> ModelRunnerOutput:
    return ModelRunnerOutput(sched_out_req_ids, [[token] for _ in sched_out_req_ids])


def bench(num_reqs: int, num_steps: int, caching: bool) -> tuple[float, float, float]:
    """Microseconds per step at num_reqs decoding: median schedule, median update, mean total."""
    sched = _make_scheduler(num_reqs, num_steps, caching)
    out = sched.schedule()  # the whole batch's prefill
    sched.update_from_output(out, _fake_runner_output(list(out.num_scheduled_tokens), 5))
    assert sched.num_running == num_reqs and sched.num_waiting == 0
    sched_us: list[float] = []
    update_us: list[float] = []
    gc.disable()  # keep collector pauses out of a per-step measurement
    try:
        for step in range(num_steps):
            t0 = time.perf_counter()
            out = sched.schedule()
            t1 = time.perf_counter()
            runner_out = _fake_runner_output(list(out.num_scheduled_tokens), 100 + step)
            t2 = time.perf_counter()
            sched.update_from_output(out, runner_out)
            t3 = time.perf_counter()
            sched_us.append((t1 - t0) * 1e6)
            update_us.append((t3 - t2) * 1e6)
    finally:
        gc.enable()
    assert sched.num_running == num_reqs
    mean_total = statistics.fmean(s + u for s, u in zip(sched_us, update_us))
    return statistics.median(sched_us), statistics.median(update_us), mean_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256])
    args = parser.parse_args()
    print(f"{'running':>8} {'prefix cache':>12} {'schedule us':>12} {'update us':>10} {'total us':>9} "
          f"{'mean total':>10} {'us/req':>7}")
    for caching in (True, False):
        for num_reqs in args.batch_sizes:
            s, u, mean_total = bench(num_reqs, args.steps, caching)
            print(f"{num_reqs:>8} {'on' if caching else 'off':>12} {s:>12.1f} {u:>10.1f} {s + u:>9.1f} "
                  f"{mean_total:>10.1f} {(s + u) / num_reqs:>7.2f}")


if __name__ == "__main__":
    main()
