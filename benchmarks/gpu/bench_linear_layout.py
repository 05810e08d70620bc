"""Does the linear layers' [in, out] weight layout (fast for CPU GEMV) cost anything on the GPU?
x @ W_t with W_t [in, out] against F.linear(x, W) with W [out, in], at decode and prefill sizes
of the Llama-3-8B projections."""
from __future__ import annotations

import torch
import torch.nn.functional as F

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096),
          "lm_head": (4096, 128256)}


def _ms(fn, iters: int = 50) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def main() -> None:
    print("proj   tokens  x@W_t[in,out] ms  F.linear W[out,in] ms  GB/s (best)")
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
        w_t = w.t().contiguous()
        for m in (1, 8, 256, 2048):
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            a, b = _ms(lambda: torch.matmul(x, w_t)), _ms(lambda: F.linear(x, w))
            print(f"{name:8s} {m:6d} {a:12.4f} {b:18.4f} {2 * k * n / min(a, b) / 1e6:10.0f}")


if __name__ == "__main__":
    main()
