"""The batch-1 decode GEMMs of the Llama-3-8B shape as the engine runs them (F.linear, weights
[out, in]), each timed in a CUDA graph on cold weights, under cuBLAS and cuBLASLt: which library
streams each projection's weights closer to the copy bandwidth.

    python benchmarks/gpu/bench_decode_gemms.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.gpu.bench_triton_kernels import capture_graph  # noqa: E402
from benchmarks.gpu.ceilings import back_to_back_ms  # noqa: E402

# name -> (in, out) of the 8B shape's projections
SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096),
          "lm_head": (4096, 128256)}


def graph_us(fns: list) -> float:  # type: ignore[type-arg]
    return 1e3 * back_to_back_ms(capture_graph(fns).replay, 20) / len(fns)


def main() -> None:
    torch.manual_seed(0)
    for name, (k, n) in SHAPES.items():
        copies = max(2, (512 << 20) // (2 * k * n))  # more weight bytes than L2 holds: every read is cold
        ws = [torch.randn(n, k, dtype=torch.bfloat16, device="cuda") / k**0.5 for _ in range(copies)]
        x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
        line = f"{name:8s} K={k:6d} N={n:6d}"
        for lib in ("cublas", "cublaslt"):
            torch.backends.cuda.preferred_blas_library(lib)
            t = graph_us([lambda w=w: F.linear(x, w) for w in ws])
            line += f"  {lib} {t:7.1f} us ({2 * k * n / t / 1e3:5.0f} GB/s)"
        print(line, flush=True)
        del ws
    torch.backends.cuda.preferred_blas_library("cublas")


if __name__ == "__main__":
    main()
