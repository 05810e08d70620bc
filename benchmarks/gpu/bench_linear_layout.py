"""Does the linear layers' [in, out] weight layout (fast for CPU GEMV) cost anything on the GPU?
x @ W_t with W_t [in, out] against F.linear(x, W) with W [out, in], at decode and prefill sizes
of the Llama-3-8B projections."""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.gpu.ceilings import back_to_back_ms  # noqa: E402

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096),
          "lm_head": (4096, 128256)}


def main() -> None:
    print("proj   tokens  x@W_t[in,out] ms  F.linear W[out,in] ms  GB/s (best)")
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
        w_t = w.t().contiguous()
        for m in (1, 8, 256, 2048):
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            a, b = back_to_back_ms(lambda: torch.matmul(x, w_t)), back_to_back_ms(lambda: F.linear(x, w))
            print(f"{name:8s} {m:6d} {a:12.4f} {b:18.4f} {2 * k * n / min(a, b) / 1e6:10.0f}")


if __name__ == "__main__":
    main()
