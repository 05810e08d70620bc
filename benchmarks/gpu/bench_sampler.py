"""The sampler's GPU time per step, torch stages against the Triton inverse-CDF stage
(kernels/triton/sampling.py), in one process: rows of temperature 1 (what `bench latency` and
`bench throughput` sample with) and of temperature 0.7 with top-k 50, over the 8B and 0.6B
vocabularies. Each timing is a loop of the sampler's eager launches with CUDA events around it,
so host launch time counts where it exceeds the GPU's (the engine runs the sampler eagerly too);
median of 5 interleaved rounds.

    python benchmarks/gpu/bench_sampler.py [--batches 1 64 256 512]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from benchmarks.gpu.ceilings import back_to_back_ms  # noqa: E402
from pagedllm.config import KernelConfig  # noqa: E402
from pagedllm.platforms.cuda import CudaPlatform  # noqa: E402
from pagedllm.sample.sampler import Sampler  # noqa: E402
from pagedllm.sample.sampling_metadata import SamplingRequest, make_sampling_metadata  # noqa: E402
from pagedllm.sampling_params import SamplingParams  # noqa: E402

VOCABS = {"llama3-8b": 128256, "qwen3-0.6b": 151936}
PARAMS = {"T=1": dict(temperature=1.0), "T=0.7, top-k 50": dict(temperature=0.7, top_k=50)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 512])
    args = parser.parse_args()
    cuda = torch.device("cuda")
    stage = CudaPlatform().inverse_cdf_stage(KernelConfig())
    samplers = {"torch": Sampler(), "triton": Sampler(inverse_cdf=stage)}
    print(f"{torch.cuda.get_device_name()}: ms per sampler call (median of 5 interleaved rounds)")
    for shape, vocab in VOCABS.items():
        for label, params in PARAMS.items():
            for batch in args.batches:
                logits = torch.randn(batch, vocab, device=cuda) * 3
                reqs = [SamplingRequest(SamplingParams(**params), [1], [], None) for _ in range(batch)]
                md = make_sampling_metadata(reqs, vocab, cuda)
                times: dict[str, list[float]] = {"torch": [], "triton": []}
                for _ in range(5):
                    for name, sampler in samplers.items():
                        times[name].append(back_to_back_ms(lambda: sampler.sample(logits, md), 20))
                t, tr = sorted(times["torch"])[2], sorted(times["triton"])[2]
                print(f"{shape:10s} {label:16s} batch {batch:4d}: torch {t:.3f}  triton {tr:.3f}  ({t / tr:.2f}x)",
                      flush=True)


if __name__ == "__main__":
    main()
