"""Would our own split-K for the o and down projections save launches in a batch-1 decode step?

cuBLAS splits K for the batch-1 o and down projections of Llama-3-8B (an output of 4096 columns
gives too few tiles to fill the GPU) and runs its own reduce kernel after the GEMM; then our
fused residual-add + RMSNorm runs. The alternative timed here: a batched GEMM over S slices of K
(x viewed as [S, T, K/S], the [K, N] weight as [S, K/S, N]: no copies) writing float32 partials,
which the RMSNorm kernel adds up itself, so the reduce costs no launch of its own.

Each timing is a CUDA graph of calls over rotated weight copies (more bytes than the L2 holds),
as in bench_gemv.py; it reports microseconds per (GEMM + norm).

    python benchmarks/gpu/bench_split_k.py [--tokens 1 2 4 8]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.gpu.bench_gemv import graph_us  # noqa: E402
from pagedllm.kernels.triton.rms_norm import rms_norm  # noqa: E402

SHAPES = {"o": (4096, 4096), "down": (14336, 4096), "qwen3-0.6b o": (2048, 1024),
          "qwen3-0.6b down": (3072, 1024)}


def split_k_partials(x: torch.Tensor, weight_t: torch.Tensor, splits: int) -> torch.Tensor:
    t, k = x.shape
    xs = x.view(t, splits, k // splits).transpose(0, 1)  # [S, T, K/S], strided
    return torch.bmm(xs, weight_t.view(splits, k // splits, -1), out_dtype=torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--splits", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, (k, n) in SHAPES.items():
        copies = max(2, (256 << 20) // (2 * k * n))
        ws = [torch.randn(k, n, dtype=torch.bfloat16, device="cuda") / k**0.5 for _ in range(copies)]
        norm_w = torch.rand(n, dtype=torch.bfloat16, device="cuda") + 0.5
        nbytes = 2 * k * n
        for t in args.tokens:
            x = torch.randn(t, k, dtype=torch.bfloat16, device="cuda")
            residual = torch.randn(t, n, dtype=torch.bfloat16, device="cuda")
            t_gemm = graph_us([lambda w=w: torch.matmul(x, w) for w in ws])
            t_base = graph_us([lambda w=w: rms_norm(torch.matmul(x, w), norm_w, 1e-5, residual) for w in ws])
            want = rms_norm(torch.matmul(x, ws[0]), norm_w, 1e-5, residual)[1].float()
            line = (f"{name:16s} T={t:2d}  cublas {t_gemm:6.1f} us ({nbytes / t_gemm / 1e3:5.0f} GB/s), "
                    f"+norm {t_base:6.1f}")
            for s in args.splits:
                if k % s:
                    continue
                got = rms_norm(split_k_partials(x, ws[0], s), norm_w, 1e-5, residual)[1].float()
                err = ((got - want).norm() / want.norm()).item()
                t_split = graph_us([lambda w=w, s=s: rms_norm(split_k_partials(x, w, s), norm_w, 1e-5, residual)
                                    for w in ws])
                line += f" | S={s}: {t_split:6.1f} (err {err:.0e})"
            print(line, flush=True)


if __name__ == "__main__":
    main()
