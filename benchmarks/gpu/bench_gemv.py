"""Would a Triton GEMV beat cuBLAS for batch-1 decode? An experiment, kept with its kernel here.

cuBLAS covers an output of N = 4096 with too few tiles to fill the GPU, so for the o and down
projections of Llama-3-8B it splits K and adds a reduce kernel (64 extra launches a decode step).
The kernel below has each program own BLOCK_N output columns and walk all of K: one launch, no
reduce. Timed against torch.matmul (cuBLAS, its reduce included) on the Llama-3-8B projections,
bf16, weights [in, out] as the Linear layers store them; each timing is a CUDA graph of calls
over rotated weight copies (more bytes than the L2 holds), so every weight read is cold.

Result (H100, 2026-11-27, best of the --sweep): qkv 21.3 us vs cuBLAS 21.6; o 16.3 vs 14.1;
gate_up 84.2 vs 79.5; down 49.9 vs 44.7. cuBLAS with its reduce is faster where it splits, so
the engine keeps cuBLAS.

    python benchmarks/gpu/bench_gemv.py [--sweep]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.gpu.bench_triton_kernels import capture_graph  # noqa: E402
from benchmarks.gpu.ceilings import back_to_back_ms  # noqa: E402


@triton.jit
def _gemv_kernel(
    out_ptr, x_ptr, w_ptr,  # [N], [K], [K, N] with row stride stride_w
    K, N, stride_w,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        ptrs = w_ptr + ks.to(tl.int64)[:, None] * stride_w + cols[None, :]
        if EVEN:  # K % BLOCK_K == 0 and N % BLOCK_N == 0: no masks in the loop
            w = tl.load(ptrs)
            x = tl.load(x_ptr + ks)
        else:
            w = tl.load(ptrs, mask=(ks < K)[:, None] & (cols < N)[None, :], other=0.0)
            x = tl.load(x_ptr + ks, mask=ks < K, other=0.0)
        acc += tl.sum(x.to(tl.float32)[:, None] * w.to(tl.float32), 0)
    tl.store(out_ptr + cols, acc.to(out_ptr.dtype.element_ty), mask=cols < N)


def gemv(x: torch.Tensor, weight_t: torch.Tensor, *, block_n: int = 32, block_k: int = 256,
         num_warps: int = 4, num_stages: int = 4) -> torch.Tensor:
    """x [1, K] @ weight_t [K, N] -> [1, N] (rows of weight_t contiguous). The launch shape can be
    overridden (benchmarks sweep it)."""
    assert x.dim() == 2 and x.shape[0] == 1 and x.stride(-1) == 1 and weight_t.stride(-1) == 1
    k, n = weight_t.shape
    out = torch.empty(1, n, dtype=x.dtype, device=x.device)
    even = k % block_k == 0 and n % block_n == 0
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        out, x, weight_t, k, n, weight_t.stride(0),
        BLOCK_N=block_n, BLOCK_K=block_k, EVEN=even, num_warps=num_warps, num_stages=num_stages,
    )
    return out


SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}


def graph_us(fns: list) -> float:  # type: ignore[type-arg]
    """Mean microseconds per call of `fns`, replayed back to back from one CUDA graph."""
    return 1e3 * back_to_back_ms(capture_graph(fns).replay, 20) / len(fns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", action="store_true", help="launch shapes of the Triton kernel")
    args = parser.parse_args()
    torch.manual_seed(0)
    configs = [dict()]
    if args.sweep:
        configs = [dict(block_n=bn, block_k=bk, num_warps=w, num_stages=s)
                   for bn, bk, w, s in itertools.product((16, 32, 64), (128, 256, 512), (4, 8), (3, 4))]
    for name, (k, n) in SHAPES.items():
        copies = max(2, (256 << 20) // (2 * k * n))
        ws = [torch.randn(k, n, dtype=torch.bfloat16, device="cuda") / k**0.5 for _ in range(copies)]
        x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
        nbytes = 2 * k * n
        t_cublas = graph_us([lambda w=w: torch.matmul(x, w) for w in ws])
        ref = torch.matmul(x.float(), ws[0].float())
        results = []
        for cfg in configs:
            got = gemv(x, ws[0], **cfg)
            err = ((got.float() - ref).norm() / ref.norm()).item()
            t = graph_us([lambda w=w, cfg=cfg: gemv(x, w, **cfg) for w in ws])
            results.append((t, cfg, err))
        results.sort(key=lambda r: r[0])
        for t, cfg, err in results[: 5 if args.sweep else 1]:
            print(f"{name:8s} K={k:6d} N={n:6d}  cublas {t_cublas:7.1f} us ({nbytes / t_cublas / 1e3:5.0f} GB/s)  "
                  f"triton {t:7.1f} us ({nbytes / t / 1e3:5.0f} GB/s) {cfg} err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
