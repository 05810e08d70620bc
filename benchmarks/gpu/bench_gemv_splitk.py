"""Could our own batch-1 GEMV, with programmatic dependent launch, beat cuBLAS's chain of a layer?

What is left above the 8B shape's batch-1 HBM floor is mostly at kernel boundaries: each GEMM's
ramp and tail, cuBLAS's split-K reduce launches, and the gaps between kernels (RESULTS.md). PDL
lets a kernel start while its predecessor finishes; it pays only where both kernels take part,
and cuBLAS's do not (tried: no gain). So this is an experiment with a GEMV of our own:

* split-K over a grid (N / BLOCK_N, SPLIT_K): each program reads BLOCK_K x BLOCK_N tiles of the
  [K, N] weight (rows BLOCK_N * 2 bytes wide, so each load is whole 128-byte lines, which the
  column-per-program GEMV of bench_gemv.py did not get) down its K range;
* the reduce in the same launch: each program writes float32 partials, counts itself in an atomic
  counter per column block, and the last one sums the partials in split order (deterministic),
  adds the residual when it accumulates (the o and down projections), rounds once and stores;
* with PDL, a program loads its first weight tile *before* `griddepcontrol.wait` (the weights do
  not depend on the previous kernel), and signals its dependents after its last tile, so the next
  GEMV's launch and first loads overlap this one's reduce.

Measured: each projection alone (cold weights, a CUDA graph of rotated copies) over a sweep of
launch shapes against cuBLAS; then the 32 folded layers of the 8B shape in one graph (qkv, o into
h, gate_up, SiLU-and-mul, down into h; attention left out), cuBLAS against these GEMVs without and
with PDL.

    python benchmarks/gpu/bench_gemv_splitk.py [--quick]

Outcome (H100, RESULTS.md 2026-12-06): slower than cuBLAS per projection (1.4-2.5 TB/s against
2.3-2.7) and over the 32 layers (6.12 ms with PDL, 6.74 without, cuBLAS 5.18); PDL saves about
4.8 us a boundary but cannot make up the bandwidth. Kept as the record; not used by the engine.
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

from benchmarks.gpu.bench_fold_norms import EPS, HIDDEN, INTER, QKV, folded, layer_weights  # noqa: E402
from benchmarks.gpu.bench_triton_kernels import capture_graph  # noqa: E402
from benchmarks.gpu.ceilings import back_to_back_ms  # noqa: E402
from pagedllm.kernels.triton.activation import silu_and_mul  # noqa: E402

SHAPES = {"qkv": (HIDDEN, QKV), "o": (HIDDEN, HIDDEN), "gate_up": (HIDDEN, 2 * INTER), "down": (INTER, HIDDEN)}


@triton.jit
def _gemv_splitk_kernel(
    out_ptr,  # [N]: written, or added into with ACCUMULATE
    x_ptr, w_ptr,  # [K], [K, N] (row stride stride_w)
    part_ptr,  # [SPLIT_K, N] float32 partials (SPLIT_K > 1)
    counter_ptr,  # [N / BLOCK_N] int32, zero between launches (SPLIT_K > 1)
    N, stride_w,
    K_PER_SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, ACCUMULATE: tl.constexpr,
    PDL: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_lo = pid_k * K_PER_SPLIT
    ks = k_lo + tl.arange(0, BLOCK_K)
    # The first tile does not depend on the previous kernel: ask for it before waiting on it.
    w = tl.load(w_ptr + ks.to(tl.int64)[:, None] * stride_w + cols[None, :])
    if PDL:
        tl.extra.cuda.gdc_wait()
    x = tl.load(x_ptr + ks)
    acc = tl.sum(x.to(tl.float32)[:, None] * w.to(tl.float32), 0)
    for i in tl.range(1, K_PER_SPLIT // BLOCK_K, num_stages=3):
        ks = k_lo + i * BLOCK_K + tl.arange(0, BLOCK_K)
        w = tl.load(w_ptr + ks.to(tl.int64)[:, None] * stride_w + cols[None, :])
        x = tl.load(x_ptr + ks)
        acc += tl.sum(x.to(tl.float32)[:, None] * w.to(tl.float32), 0)
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    if SPLIT_K == 1:
        if ACCUMULATE:
            acc += tl.load(out_ptr + cols).to(tl.float32)
        tl.store(out_ptr + cols, acc.to(out_ptr.dtype.element_ty))
    else:
        tl.store(part_ptr + pid_k * N + cols, acc)
        tl.debug_barrier()  # every thread's partials before the count (released at GPU scope)
        if tl.atomic_add(counter_ptr + pid_n, 1, sem="acq_rel") == SPLIT_K - 1:
            total = tl.zeros([BLOCK_N], tl.float32)
            for s in range(SPLIT_K):  # in split order: the same sum whichever program is last
                total += tl.load(part_ptr + s * N + cols, cache_modifier=".cg")
            if ACCUMULATE:
                total += tl.load(out_ptr + cols).to(tl.float32)
            tl.store(out_ptr + cols, total.to(out_ptr.dtype.element_ty))
            tl.atomic_xchg(counter_ptr + pid_n, 0)


class SplitKGemv:
    """x [1, K] @ weight_t [K, N] into a fixed output (or added into `out` with accumulate), with
    its own partials and counters: one per projection, so a graph can replay them in a chain."""

    def __init__(self, weight_t: torch.Tensor, *, block_n: int = 256, block_k: int = 32, split_k: int = 8,
                 num_warps: int = 4, pdl: bool = False) -> None:
        k, n = weight_t.shape
        assert weight_t.stride(-1) == 1 and n % block_n == 0 and k % (split_k * block_k) == 0, (k, n)
        self.weight_t, self.n, self.k_per_split = weight_t, n, k // split_k
        self.block_n, self.block_k, self.split_k, self.num_warps, self.pdl = block_n, block_k, split_k, num_warps, pdl
        dev = weight_t.device
        self.part = torch.empty(split_k, n, dtype=torch.float32, device=dev)
        self.counters = torch.zeros(n // block_n, dtype=torch.int32, device=dev)

    def __call__(self, x: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
        assert x.dim() == 2 and x.shape[0] == 1 and x.stride(-1) == 1 and out.is_contiguous()
        grid = (self.n // self.block_n, self.split_k)
        _gemv_splitk_kernel[grid](
            out, x, self.weight_t, self.part, self.counters, self.n, self.weight_t.stride(0),
            K_PER_SPLIT=self.k_per_split, BLOCK_N=self.block_n, BLOCK_K=self.block_k, SPLIT_K=self.split_k, ACCUMULATE=accumulate,
            PDL=self.pdl, num_warps=self.num_warps, launch_pdl=self.pdl,
        )
        return out


def _graph_us(fns: list) -> float:  # type: ignore[type-arg]
    """Mean microseconds per call of `fns`, replayed back to back from one CUDA graph."""
    return 1e3 * back_to_back_ms(capture_graph(fns).replay, 20) / len(fns)


def sweep_projections(configs: list[dict]) -> dict[str, dict]:
    """Each projection alone, cold weights: cuBLAS against the best launch shapes; returns the best
    config per projection."""
    best: dict[str, dict] = {}
    for name, (k, n) in SHAPES.items():
        copies = max(2, (256 << 20) // (2 * k * n))
        ws = [torch.randn(k, n, dtype=torch.bfloat16, device="cuda") / k**0.5 for _ in range(copies)]
        x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
        ref = torch.matmul(x.float(), ws[0].float())
        nbytes = 2 * k * n
        t_cublas = _graph_us([lambda w=w: torch.matmul(x, w) for w in ws])
        results = []
        for cfg in configs:
            if n % cfg["block_n"] or k % (cfg["split_k"] * cfg["block_k"]):
                continue
            gemvs = [SplitKGemv(w, **cfg) for w in ws]
            out = torch.empty(1, n, dtype=torch.bfloat16, device="cuda")
            err = ((gemvs[0](x, out).float() - ref).norm() / ref.norm()).item()
            results.append((_graph_us([lambda g=g: g(x, out) for g in gemvs]), cfg, err))
        results.sort(key=lambda r: r[0])
        print(f"{name:8s} K={k:6d} N={n:6d}  cuBLAS {t_cublas:6.1f} us ({nbytes / t_cublas / 1e3:4.0f} GB/s)", flush=True)
        for t, cfg, err in results[:3]:
            print(f"           ours {t:6.1f} us ({nbytes / t / 1e3:4.0f} GB/s)  {cfg}  rel err {err:.1e}", flush=True)
        best[name] = results[0][1]
        del ws
    return best


def _layers_ours(gemvs: list[dict[str, SplitKGemv]], h: torch.Tensor, bufs: dict[str, torch.Tensor]) -> None:
    for g in gemvs:
        qkv = g["qkv"](h, bufs["qkv"])
        g["o"](qkv[:, :HIDDEN], h, accumulate=True)
        act = silu_and_mul(g["gate_up"](h, bufs["gate_up"]), h, EPS)
        g["down"](act, h, accumulate=True)


def layer_chain(best: dict[str, dict], rounds: int) -> None:
    """The 32 folded 8B layers (attention left out) in one graph: cuBLAS against our GEMVs. One
    replay of each from the same h first: ours with PDL must equal ours without bit for bit (the
    same kernels; a missing wait would race), and both stay near cuBLAS."""
    torch.manual_seed(0)
    ws = layer_weights()
    h0 = torch.randn(1, HIDDEN, dtype=torch.bfloat16, device="cuda") * 0.1
    bufs = {"qkv": torch.empty(1, QKV, dtype=torch.bfloat16, device="cuda"),
            "gate_up": torch.empty(1, 2 * INTER, dtype=torch.bfloat16, device="cuda")}
    hs = {name: h0.clone() for name in ("cuBLAS", "ours, PDL off", "ours, PDL on")}
    fns = {"cuBLAS": lambda: folded(ws, hs["cuBLAS"])}
    for pdl in (False, True):
        name = f"ours, PDL {'on' if pdl else 'off'}"
        gemvs = [{proj: SplitKGemv(w[proj], **{**best[proj], "pdl": pdl}) for proj in SHAPES} for w in ws]
        fns[name] = lambda gemvs=gemvs, h=hs[name]: _layers_ours(gemvs, h, bufs)
    graphs = {name: capture_graph([fn]) for name, fn in fns.items()}
    replay_once_against_cublas(graphs, hs, h0)
    print(f"PDL on equals PDL off bit for bit: {torch.equal(hs['ours, PDL on'], hs['ours, PDL off'])}", flush=True)
    time_graphs_interleaved(graphs, rounds, "32 layers")


def replay_once_against_cublas(graphs: dict[str, torch.cuda.CUDAGraph], hs: dict[str, torch.Tensor],
                               h0: torch.Tensor) -> None:
    """Each graph replayed once on its own hidden state hs[name] reset to h0; prints how far each
    result is from the "cuBLAS" graph's."""
    for name, g in graphs.items():
        hs[name].copy_(h0)
        g.replay()
    torch.cuda.synchronize()
    ref = hs["cuBLAS"].float()
    for name in graphs:
        if name != "cuBLAS":
            err = ((hs[name].float() - ref).norm() / ref.norm()).item()
            print(f"one replay, {name} against cuBLAS: rel err {err:.1e}", flush=True)


def time_graphs_interleaved(graphs: dict[str, torch.cuda.CUDAGraph], rounds: int, what: str) -> None:
    """Prints each graph's median ms a replay over `rounds` rounds, the graphs taking turns."""
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, g in graphs.items():
            times[name].append(back_to_back_ms(g.replay, 20))
    for name, ts in times.items():
        ts.sort()
        print(f"{what}, {name:24s} median {ts[rounds // 2]:.3f} ms (min {ts[0]:.3f}, max {ts[-1]:.3f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a few launch shapes only")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    shapes = ((256, 32, 8, 4), (512, 16, 8, 4)) if args.quick else itertools.product(
        (256, 512), (16, 32), (4, 8, 16), (4, 8))
    configs = [dict(block_n=bn, block_k=bk, split_k=sk, num_warps=w) for bn, bk, sk, w in shapes]
    print(f"{torch.cuda.get_device_name()}: batch-1 GEMVs of the 8B shape, {len(configs)} launch shapes", flush=True)
    layer_chain(sweep_projections(configs), args.rounds)


if __name__ == "__main__":
    main()
