"""Does reading the next projection's weight into L2 while a small kernel runs pay at batch 1?

At batch-1 decode, HBM idles while decode attention (about 8 us a layer on the 8B shape) and
SiLU-and-mul (about 2.4 us) run: they read almost nothing. The weights of the next GEMM do not
depend on those kernels' outputs, so a kernel on a side stream, forked after the qkv GEMM, could
read the first part of the o projection's weight into L2 meanwhile; the o GEMM would then find it
there. This measures that on a CUDA graph of the 32 folded layers of the Llama-3-8B shape, with
attention stood in for by a spin kernel of the same length (torch.cuda._sleep):

    qkv GEMM -> [attention: spin ATT us]  -> o GEMM (+= into h) -> gate_up GEMM -> SiLU -> down GEMM
                 [side: warm o's weight]                                [side: warm next qkv's]

Warming reads a fraction of the weight (its first rows: the early K of every output column,
what every CTA of a cuBLAS GEMM reads first) with plain loads kept in L2 (evict_last), or asks
for it with prefetch.global.L2 (no registers held); the o warm is forked after the qkv GEMM or
(early) before it. A previous experiment issued bulk L2
prefetches from inside the small kernels themselves and held them up; here they run beside.

    python benchmarks/gpu/bench_l2_warm.py [--att-us 8]

Outcome (H100, RESULTS.md 2026-11-28 morning): here, prefetching 24 MiB of o's weight took 3 us
off a layer; in the engine, beside the real decode attention kernel, the same prefetch made the
8B decode step 0.22 ms slower (attention's chain of dependent loads waits behind the prefetches
in HBM's queues; a spin kernel does not). Not adopted.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from benchmarks.gpu.bench_fold_norms import EPS, HIDDEN, LAYERS, layer_weights  # noqa: E402
from benchmarks.gpu.bench_triton_kernels import capture_graph  # noqa: E402
from benchmarks.gpu.ceilings import back_to_back_ms  # noqa: E402
from pagedllm.kernels.triton.activation import silu_and_mul  # noqa: E402


@triton.jit
def _warm_load(ptr, sink_ptr, n, step, BLOCK: tl.constexpr):
    """Reads ptr[0:n] (grid-strided by step) into L2 and keeps the lines there; the sum keeps the loads."""
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], tl.float32)
    for i in range(0, tl.cdiv(n, step)):
        offs = i * step + pid * BLOCK + tl.arange(0, BLOCK)
        acc += tl.load(ptr + offs, mask=offs < n, other=0.0, eviction_policy="evict_last").to(tl.float32)
    tl.store(sink_ptr + pid, tl.sum(acc, 0))


@triton.jit
def _warm_prefetch(ptr, sink_ptr, n, step, LINES: tl.constexpr, LINE: tl.constexpr):
    """Asks L2 for the 128-byte lines of ptr[0:n] (grid-strided by step), without waiting for them."""
    pid = tl.program_id(0)
    total = tl.zeros([LINES], tl.int32)
    for i in range(0, tl.cdiv(n, step)):
        offs = i * step + pid * LINES * LINE + tl.arange(0, LINES) * LINE
        ptrs = ptr + tl.minimum(offs, n - 1)
        total += tl.inline_asm_elementwise("prefetch.global.L2::evict_last [$1];\n\tmov.u32 $0, 0;", "=r,l",
                                           [ptrs], dtype=tl.int32, is_pure=False, pack=1)
    tl.store(sink_ptr + pid, tl.sum(total, 0))


def warm(weight: torch.Tensor, fraction: float, mode: str, ctas: int, sink: torch.Tensor) -> None:
    n = int(weight.numel() * fraction)
    if n == 0:
        return
    if mode == "load":
        _warm_load[(ctas,)](weight, sink, n, ctas * 4096, BLOCK=4096, num_warps=8)
    else:
        line = 128 // weight.element_size()
        _warm_prefetch[(ctas,)](weight, sink, n, ctas * 1024 * line, LINES=1024, LINE=line, num_warps=4)


def layers(ws, r, att_cycles: int, o_frac: float, qkv_frac: float, mode: str, ctas: int, early: bool,
           side: torch.cuda.Stream, sink: torch.Tensor) -> None:
    """The folded layers; o_frac of each o weight warmed on the side stream, forked after the qkv
    GEMM (early: before it); qkv_frac of the next layer's qkv weight forked before the down GEMM
    (its tail and cuBLAS's split-K reduce leave HBM idle)."""
    main = torch.cuda.current_stream()
    forks = bool(o_frac or qkv_frac)
    if forks:  # the side stream joins the capture only when forked from it
        side.wait_stream(main)
    for i, w in enumerate(ws):
        if o_frac and early:
            side.wait_stream(main)
            with torch.cuda.stream(side):
                warm(w["o"], o_frac, mode, ctas, sink)
        attn = torch.matmul(r, w["qkv"])[:, :HIDDEN]
        if o_frac and not early:
            side.wait_stream(main)
            with torch.cuda.stream(side):
                warm(w["o"], o_frac, mode, ctas, sink)
        if att_cycles:
            torch.cuda._sleep(att_cycles)
        r.addmm_(attn, w["o"])
        act = silu_and_mul(torch.matmul(r, w["gate_up"]), r, EPS)
        if qkv_frac and i + 1 < len(ws):
            side.wait_stream(main)
            with torch.cuda.stream(side):
                warm(ws[i + 1]["qkv"], qkv_frac, mode, ctas, sink)
        r.addmm_(act, w["down"])
    if forks:
        main.wait_stream(side)


def _sleep_cycles(us: float) -> int:
    """Cycles of torch.cuda._sleep that take `us` microseconds in a graph (measured)."""
    probe = 20000
    graph = capture_graph([lambda: [torch.cuda._sleep(probe) for _ in range(32)]])
    per_us = probe / (back_to_back_ms(graph.replay, 20) * 1000 / 32)
    return int(us * per_us)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--att-us", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    ws = layer_weights()
    r = torch.randn(1, HIDDEN, dtype=torch.bfloat16, device="cuda")
    side = torch.cuda.Stream()
    sink = torch.zeros(1024, dtype=torch.float32, device="cuda")
    cycles = _sleep_cycles(args.att_us)
    print(f"{torch.cuda.get_device_name()}: 32 folded 8B layers, batch 1, attention as a {args.att_us} us spin "
          f"({cycles} cycles); ms per graph replay, median of {args.rounds} interleaved rounds")
    variants = {"no attention, no warming": (0, 0.0, 0.0, "prefetch", 0, False),
                "no warming": (cycles, 0.0, 0.0, "prefetch", 0, False),
                "load 128 CTAs, o 0.25": (cycles, 0.25, 0.0, "load", 128, False)}
    for ctas in (128, 264):
        for o_frac in (0.5, 0.75, 1.0):
            variants[f"prefetch {ctas} CTAs, o {o_frac}"] = (cycles, o_frac, 0.0, "prefetch", ctas, False)
        variants[f"prefetch {ctas} CTAs, o 0.75 early"] = (cycles, 0.75, 0.0, "prefetch", ctas, True)
        for qkv_frac in (0.25, 0.5):
            variants[f"prefetch {ctas} CTAs, o 0.75, qkv {qkv_frac}"] = (cycles, 0.75, qkv_frac, "prefetch", ctas, False)
    graphs = {name: capture_graph([lambda v=v: layers(ws, r, *v, side, sink)]) for name, v in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(args.rounds):
        for name, g in graphs.items():
            times[name].append(back_to_back_ms(g.replay, 20))
    base = sorted(times["no warming"])[args.rounds // 2]
    for name, ts in times.items():
        ts.sort()
        med = ts[args.rounds // 2]
        print(f"{name:42s} median {med:.3f} ms  (min {ts[0]:.3f}, max {ts[-1]:.3f})  {1000 * (med - base) / LAYERS:+.2f} us/layer")


if __name__ == "__main__":
    main()
