"""Micro-benchmark: make_sampling_metadata + Sampler.forward per step, vocab 49152.

    python benchmarks/bench_sampler.py [--rows 1 64 256] [--iters 10]

Each scenario gives every row the same SamplingParams; rows have a 512-token prompt and 128
output tokens (only penalties read them). Logits are randn (flat: the worst case for top-p, whose
mass then spans most of the vocab) or Zipf-like (p ~ rank^-1.5 in a random order per row, closer
to a model's). Times are in milliseconds: the best and the median of --iters runs (the best is
the one to compare on a shared machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pagedllm.config import KernelConfig
from pagedllm.platforms.cpu import CpuPlatform
from pagedllm.sample.sampler import Sampler
from pagedllm.sample.sampling_metadata import SamplingRequest, make_sampling_metadata
from pagedllm.sampling_params import SamplingParams

VOCAB = 49152
SCENARIOS: dict[str, tuple[str, dict[str, object]]] = {  # name -> (logits, params)
    "greedy": ("randn", dict(temperature=0.0)),
    "random": ("randn", dict(temperature=1.0)),
    "top_k=50,top_p=0.9": ("randn", dict(temperature=0.8, top_k=50, top_p=0.9)),
    "top_p=0.9 (randn)": ("randn", dict(temperature=0.8, top_p=0.9)),
    "top_p=0.9 (zipf)": ("zipf", dict(temperature=0.8, top_p=0.9)),
    "min_p=0.05": ("randn", dict(temperature=0.8, min_p=0.05)),
    "seeded random": ("randn", dict(temperature=1.0, seed=0)),
    "penalties": ("randn", dict(temperature=0.8, repetition_penalty=1.1, frequency_penalty=0.3,
                                presence_penalty=0.2)),
    "greedy+logprobs=5": ("randn", dict(temperature=0.0, logprobs=5)),
}


def _rows(n: int, params: dict[str, object]) -> list[SamplingRequest]:
    g = torch.Generator().manual_seed(0)
    return [SamplingRequest(SamplingParams(**params), torch.randint(0, VOCAB, (512,), generator=g).tolist(),
                            torch.randint(0, VOCAB, (128,), generator=g).tolist(), 2) for _ in range(n)]


def _logits(kind: str, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "randn":
        return torch.randn(n, VOCAB, generator=g)  # [n, V]
    log_probs = -1.5 * torch.arange(1, VOCAB + 1, dtype=torch.float32).log()  # [V] Zipf, s = 1.5
    order = torch.rand(n, VOCAB, generator=g).argsort(dim=-1)  # [n, V] a random token order per row
    return log_probs[order]


def _time(fn, iters: int) -> tuple[float, float]:
    fn()  # warm-up
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples) * 1e3, statistics.median(samples) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    device = torch.device("cpu")
    sampler = Sampler(inverse_cdf=CpuPlatform().inverse_cdf_stage(KernelConfig()))  # as the engine's
    print(f"vocab {VOCAB}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.iters} runs, ms")
    print(f"{'scenario':<20}{'rows':>5}{'metadata best':>15}{'forward best':>14}{'total best':>12}{'total median':>14}")
    for name, (kind, params) in SCENARIOS.items():
        for n in args.rows:
            rows = _rows(n, params)
            logits = _logits(kind, n)
            md = make_sampling_metadata(rows, VOCAB, device)
            md_best, md_median = _time(lambda: make_sampling_metadata(rows, VOCAB, device), args.iters)
            fw_best, fw_median = _time(lambda: sampler.forward(logits, md), args.iters)
            print(f"{name:<20}{n:>5}{md_best:>15.3f}{fw_best:>14.3f}{md_best + fw_best:>12.3f}"
                  f"{md_median + fw_median:>14.3f}")


if __name__ == "__main__":
    main()
