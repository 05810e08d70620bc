"""Can a Triton GEMV built on tl.dot match cuBLAS's bandwidth at batch 1, so PDL and fusion pay?

The split-K GEMV of an earlier experiment (elementwise multiply and sum; RESULTS.md 2026-12-06)
streamed weights at 1.4-2.5 TB/s against cuBLAS's 2.3-2.7: its loads are plain register loads, so few bytes are in flight per SM.
Loads that feed tl.dot are what Triton's pipeliner turns into asynchronous copies (cp.async) with
NUM_STAGES tiles in flight. So this GEMV is a skinny GEMM:
x is a [BLOCK_M = 16, K] tile (the batch's rows, here 1, the rest masked to zero), the tensor
cores' wasted rows cost nothing that matters at this size, and the weight tiles stream through
the pipeline. The kernel is the engine's (pagedllm/kernels/triton/skinny_gemm.py, on with
PAGEDLLM_TRITON_GEMV=1); around the product, what only our own kernel can do:

* split-K with the reduce in the same launch (partials, an atomic count per column tile, the last
  program sums them in split order), instead of cuBLAS's separate reduce kernel;
* the o and down projections add into the residual in the epilogue (as cuBLAS's beta = 1 does);
* gate_up's epilogue applies SiLU-and-mul and the folded norm's 1 / rms(h) (the engine's
  silu_and_mul roundings), so the SiLU launch is gone;
* programmatic dependent launch (PDL): a program loads its first weight tile before
  `griddepcontrol.wait`, so the next GEMV's launch and first loads overlap this one's tail.

Measured: each projection alone (cold weights, a CUDA graph of rotated copies) over launch shapes
against cuBLAS (gate_up against cuBLAS + silu_and_mul); then the 32 folded layers of the 8B shape
in one graph, attention left out, cuBLAS against ours without and with PDL, at the best swept
shapes and at the engine's own pick (pick_config). Correctness: tests/kernels/test_triton_skinny_gemm.py.

    python benchmarks/gpu/bench_gemv_dot.py [--quick]

Outcome (H100, RESULTS.md 2026-12-06, evening): at the best swept shapes each projection streams
like cuBLAS (qkv 20.3 against 21.5 us, o 15.8 / 15.7, gate_up with SiLU 84.1 / 82.7, down 43.2 /
44.1) and the 32 layers take 5.147 ms without PDL, 4.997 with, against cuBLAS's 5.183. The best
shapes have about one program per SM, which is what pick_config now gives. A TMA variant (a host
TensorDescriptor loaded in a nested jit helper) did not compile with Triton 3.6 and was dropped.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.gpu.bench_fold_norms import EPS, HIDDEN, INTER, QKV, folded, layer_weights  # noqa: E402
from benchmarks.gpu.bench_triton_kernels import capture_graph  # noqa: E402
from benchmarks.gpu.ceilings import back_to_back_ms  # noqa: E402
from pagedllm.kernels.triton.activation import silu_and_mul  # noqa: E402
from pagedllm.kernels.triton.skinny_gemm import GemvConfig, pick_config, skinny_gemm  # noqa: E402

SHAPES = {"qkv": (HIDDEN, QKV), "o": (HIDDEN, HIDDEN), "gate_up": (HIDDEN, 2 * INTER), "down": (INTER, HIDDEN)}


def gemv(w: torch.Tensor, cfg: GemvConfig, pdl: bool, gated: bool = False):  # type: ignore[no-untyped-def]
    """x -> the engine's skinny GEMM of x and w with this launch shape (gated: with its SiLU epilogue)."""
    def call(x: torch.Tensor, out: torch.Tensor, accumulate: bool = False,
             norm: torch.Tensor | None = None) -> torch.Tensor:
        return skinny_gemm(x, w, cfg, out=out, accumulate=accumulate, gated=gated, norm_input=norm, eps=EPS, pdl=pdl)
    return call


def reference(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, accumulate: bool,
              norm: torch.Tensor | None) -> torch.Tensor:
    """What the engine computes today: cuBLAS (torch.matmul / addmm_) and silu_and_mul."""
    if norm is not None:
        return silu_and_mul(torch.matmul(x, w), norm, EPS)
    if accumulate:
        return out.clone().addmm_(x, w)
    return torch.matmul(x, w)


def _graph_us(fns: list) -> float:  # type: ignore[type-arg]
    return 1e3 * back_to_back_ms(capture_graph(fns).replay, 20) / len(fns)


def sweep_projections(configs: list[GemvConfig]) -> dict[str, GemvConfig]:
    """Each projection alone, cold weights: cuBLAS (gate_up: with silu_and_mul) against the engine's
    pick and the best swept launch shapes; returns the best shape per projection."""
    best: dict[str, GemvConfig] = {}
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for name, (k, n) in SHAPES.items():
        gated, accumulate = name == "gate_up", name in ("o", "down")
        n_out = n // 2 if gated else n
        copies = max(2, (256 << 20) // (2 * k * n))
        ws = [torch.randn(k, n, dtype=torch.bfloat16, device="cuda") / k**0.5 for _ in range(copies)]
        x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
        norm = torch.randn(1, HIDDEN, dtype=torch.bfloat16, device="cuda") if gated else None
        out = torch.randn(1, n_out, dtype=torch.bfloat16, device="cuda")
        want = reference(x, ws[0], out, accumulate, norm).float()
        nbytes = 2 * k * n
        t_cublas = _graph_us([lambda w=w: reference(x, w, out, accumulate, norm) for w in ws])
        picked = pick_config(k, n_out, gated, sms)
        results = []
        for cfg in dict.fromkeys([picked, *configs]):  # the engine's pick first, once
            if n_out % cfg.block_n or k % (cfg.split_k * cfg.block_k):
                continue
            programs = n_out // cfg.block_n * cfg.split_k
            if cfg != picked and not 96 <= programs <= 1200:
                continue
            calls = [gemv(w, cfg, pdl=False, gated=gated) for w in ws]
            try:
                err = ((calls[0](x, out.clone(), accumulate, norm).float() - want).norm() / want.norm()).item()
            except Exception as e:  # e.g. more shared memory than the card has: not a candidate
                print(f"           {cfg}: {type(e).__name__}", flush=True)
                continue
            scratch = out.clone()
            t = _graph_us([lambda c=c: c(x, scratch, accumulate, norm) for c in calls])
            results.append((t, cfg, err))
            if cfg == picked:
                t_picked = t
        print(f"{name:8s} K={k:6d} N={n:6d}  cuBLAS{' + SiLU' if gated else ''} {t_cublas:6.1f} us "
              f"({nbytes / t_cublas / 1e3:4.0f} GB/s); engine's pick {t_picked:6.1f} us {picked}", flush=True)
        results.sort(key=lambda r: r[0])
        for t, cfg, err in results[:4]:
            print(f"           ours {t:6.1f} us ({nbytes / t / 1e3:4.0f} GB/s)  {cfg}  rel err {err:.1e}", flush=True)
        best[name] = results[0][1]
        del ws
    return best


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


def _layers_ours(calls: list[dict], h: torch.Tensor, bufs: dict[str, torch.Tensor]) -> None:  # type: ignore[type-arg]
    for c in calls:
        qkv = c["qkv"](h, bufs["qkv"])
        c["o"](qkv[:, :HIDDEN], h, accumulate=True)
        act = c["gate_up"](h, bufs["act"], norm=h)
        c["down"](act, h, accumulate=True)


def layer_chain(shapes: dict[str, dict[str, GemvConfig]], rounds: int) -> None:
    """The 32 folded 8B layers (attention left out) in one graph: cuBLAS + silu_and_mul against
    our GEMMs (4 launches a layer) per set of launch shapes, PDL off and on. One replay of each
    from the same h first: PDL on must equal PDL off bit for bit (the same kernels; a missing
    wait would race), and both stay near cuBLAS."""
    torch.manual_seed(0)
    ws = layer_weights()
    h0 = torch.randn(1, HIDDEN, dtype=torch.bfloat16, device="cuda") * 0.1
    bufs = {"qkv": torch.empty(1, QKV, dtype=torch.bfloat16, device="cuda"),
            "act": torch.empty(1, INTER, dtype=torch.bfloat16, device="cuda")}
    hs = {"cuBLAS": h0.clone()}
    fns = {"cuBLAS": lambda: folded(ws, hs["cuBLAS"])}
    for label, cfgs in shapes.items():
        for pdl in (False, True):
            name = f"{label}, PDL {'on' if pdl else 'off'}"
            hs[name] = h0.clone()
            calls = [{p: gemv(w[p], cfgs[p], pdl, gated=p == "gate_up") for p in SHAPES} for w in ws]
            fns[name] = lambda calls=calls, h=hs[name]: _layers_ours(calls, h, bufs)
    graphs = {name: capture_graph([fn]) for name, fn in fns.items()}
    replay_once_against_cublas(graphs, hs, h0)
    for label in shapes:
        same = torch.equal(hs[f"{label}, PDL on"], hs[f"{label}, PDL off"])
        print(f"{label}: PDL on equals PDL off bit for bit: {same}", flush=True)
    time_graphs_interleaved(graphs, rounds, "32 layers")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a few launch shapes only")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    shapes = ((64, 128, 4, 4),) if args.quick else itertools.product((64, 128), (128, 256), (1, 2, 4, 8), (3, 5))
    configs = [GemvConfig(bn, bk, sk, num_stages=st) for bn, bk, sk, st in shapes]
    print(f"{torch.cuda.get_device_name()}: batch-1 GEMMs of the 8B shape, up to {len(configs)} launch shapes",
          flush=True)
    best = sweep_projections(configs)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    picked = {p: pick_config(k, n // 2 if p == "gate_up" else n, p == "gate_up", sms) for p, (k, n) in SHAPES.items()}
    layer_chain({"best swept": best, "engine's pick": picked}, args.rounds)


if __name__ == "__main__":
    main()
