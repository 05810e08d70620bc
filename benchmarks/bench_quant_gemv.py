"""Micro-benchmark: the quantized linear kernels (kernels/cpu/quant.py) on SmolLM2-135M's shapes.

    python benchmarks/bench_quant_gemv.py [--types Q4_1 Q8_0 Q4_K Q6_K] [--rows 1 64]
        [--isas avx512vnni avx2] [--threads 2] [--iters 20] [--hot]

Per shape (K x N), type, M and ISA path: microseconds per call (the best of --iters; the median
in brackets) and GB/s of weight bytes (M = 1) or GFLOP/s (M > 1), against torch float32
`x @ W.t()` and our float32 panel GEMM (linear_f32) on the same shape. Weights are cold by
default: each call takes the next of enough copies to fill 256 MB, as a decode step reads each
layer's weights once from DRAM (--hot: one copy, from cache).

Then the machine's memory bandwidth (a 1 GiB tensor summed and copied with torch, --threads
threads), the batch-1 floor per token of the default GGUF file (its layers' quantized bytes plus
the LM head's, over that bandwidth), and the GEMVs of one decode token measured on the file's
own weights: every layer's q, k, v, o, gate_up (merged) and down and the LM head (the tied
embedding), M = 1, in order, against the same with linear_f32 on the dequantized weights.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable

import gguf
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pagedllm.kernels.cpu import load_cpu_kernels, pack_linear_f32, quant

T = gguf.GGMLQuantizationType
SHAPES = {"q/o": (576, 576), "k/v": (576, 192), "gate_up": (576, 3072), "down": (1536, 576), "lm_head": (576, 49152)}
D_OFFSETS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q2_K: [80, 82],
             T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}  # fp16 d (and m/dmin) in a block
COLD_BYTES = 256 << 20


def random_raw(qtype: T, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random valid GGUF blocks: random quant and scale bytes, fp16 scales of a sane magnitude."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows * cols // block_size, type_size), dtype=np.uint8)
    for at in D_OFFSETS[qtype]:
        d = np.asarray(rng.uniform(1e-3, 3e-3, size=blocks.shape[0]), dtype=np.float16)
        blocks[:, at:at + 2] = d.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


def best_median(fns: list[Callable[[], object]], iters: int) -> tuple[float, float]:
    """Seconds per call: best and median of `iters` calls, cycling through `fns` (cold copies)."""
    for fn in fns[:2]:
        fn()
    samples = []
    for i in range(iters):
        fn = fns[i % len(fns)]
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples), statistics.median(samples)


def copies(nbytes: int, hot: bool) -> int:
    return 1 if hot else max(2, min(64, -(-COLD_BYTES // nbytes)))


def bench_shapes(args: argparse.Namespace) -> None:
    kernels = load_cpu_kernels()
    isas = [i for i in args.isas if i in quant.isas()]
    print(f"\n{'shape':<9}{'K x N':>12}{'type':>6}{'M':>4}  " + "".join(f"{name:>24}" for name in
          ["torch f32", "linear_f32", *isas]))
    for shape, (K, N) in SHAPES.items():
        for M in args.rows:
            x = torch.randn(M, K)
            flops = 2 * M * K * N
            f32 = [torch.randn(N, K) for _ in range(copies(4 * N * K, args.hot))]
            cells = [best_median([functools.partial(torch.matmul, x, w.t()) for w in f32], args.iters)]
            del f32
            if kernels is not None and kernels.has_avx512():
                panels = [pack_linear_f32(torch.randn(N, K)) for _ in range(copies(4 * N * K, args.hot))]
                cells.append(best_median([functools.partial(kernels.linear_f32, x, p, None, N, None) for p in panels],
                                         args.iters))
                del panels
            else:
                cells.append((float("nan"), float("nan")))
            base = "".join(_cell(t, M, 4 * N * K, flops) for t in cells)
            for name in args.types:
                qtype = T.__members__[name]
                if K % gguf.GGML_QUANT_SIZES[qtype][0]:
                    continue
                raw = torch.from_numpy(random_raw(qtype, N, K))
                weights = [quant.repack(raw, int(qtype), N, K) for _ in range(copies(raw.numel(), args.hot))]
                row = ""
                for isa in isas:
                    previous = quant.set_isa(isa)
                    row += _cell(best_median([functools.partial(quant.linear, x, w) for w in weights], args.iters), M,
                                 weights[0].num_bytes, flops)
                    quant.set_isa(previous)
                print(f"{shape:<9}{f'{K}x{N}':>12}{name:>6}{M:>4}  {base}{row}", flush=True)


def _cell(t: tuple[float, float], M: int, nbytes: int, flops: int) -> str:
    best, median = t
    rate = f"{nbytes / best / 1e9:5.1f}GB/s" if M == 1 else f"{flops / best / 1e9:5.0f}GF/s"
    return f"{best * 1e6:8.1f}({median * 1e6:6.0f}) {rate}"


def memory_bandwidth() -> float:
    """GB/s of a 1 GiB float32 tensor summed (read only; the best of 5), and its copy, printed."""
    a = torch.ones(1 << 28)
    b = torch.empty_like(a)
    read, _ = best_median([lambda: a.sum()], 5)
    copy, _ = best_median([lambda: b.copy_(a)], 5)
    print(f"\nmemory bandwidth, {torch.get_num_threads()} threads: sum {a.numel() * 4 / read / 1e9:.1f} GB/s read, "
          f"copy {a.numel() * 8 / copy / 1e9:.1f} GB/s read + written")
    return a.numel() * 4 / read / 1e9


def token_gemvs(args: argparse.Namespace, bandwidth: float) -> None:
    """The GEMVs of one decode token on the default GGUF file's own weights."""
    from pagedllm.models.source import resolve_model_source

    source = resolve_model_source(None)
    if source.gguf_file is None:
        return
    reader = gguf.GGUFReader(os.path.join(source.path, source.gguf_file))
    tensors = {t.name: t for t in reader.tensors}
    num_layers = 1 + max(int(n.split(".")[1]) for n in tensors if n.startswith("blk."))
    projections = [["attn_q"], ["attn_k"], ["attn_v"], ["attn_output"], ["ffn_gate", "ffn_up"], ["ffn_down"]]
    head = tensors.get("output.weight", tensors["token_embd.weight"])
    layers: list[tuple[int, torch.Tensor, int, int]] = []  # (type, raw rows, N, K)
    for i in range(num_layers):
        for names in projections:
            by_type: dict[int, list[np.ndarray]] = {}  # merged when of one type (mixed files may differ)
            for name in names:
                t = tensors[f"blk.{i}.{name}.weight"]
                by_type.setdefault(int(t.tensor_type), []).append(np.asarray(t.data))
                cols = int(t.shape[0])
            for qtype, parts in by_type.items():
                raw = np.concatenate(parts)  # merged: more rows of the same K
                layers.append((qtype, torch.from_numpy(raw), raw.shape[0], cols))
    layers.append((int(head.tensor_type), torch.from_numpy(np.asarray(head.data).copy()), int(head.shape[1]),
                   int(head.shape[0])))
    packed = [quant.repack(raw, t, n, k) for t, raw, n, k in layers]
    nbytes = sum(w.num_bytes for w in packed)
    types = sorted({w.qtype.name for w in packed})
    print(f"\n{source.gguf_file}: {len(layers)} GEMVs per token ({'/'.join(types)}), {nbytes / 1e6:.1f} MB of "
          f"weights: batch-1 floor {nbytes / bandwidth / 1e6:.2f} ms per token at {bandwidth:.1f} GB/s (below 1x: "
          "part of them stayed in the last-level cache)")
    x = {k: torch.randn(1, k) for k in {w.cols for w in packed}}
    for isa in [i for i in args.isas if i in quant.isas()]:
        previous = quant.set_isa(isa)
        best, median = best_median([lambda: [quant.linear(x[w.cols], w) for w in packed]], max(5, args.iters // 4))
        quant.set_isa(previous)
        print(f"  quant_linear {isa:<12} {best * 1e3:6.2f} ms (median {median * 1e3:.2f}), "
              f"{nbytes / best / 1e9:5.1f} GB/s, {best / (nbytes / bandwidth / 1e9):.2f}x the floor")
    kernels = load_cpu_kernels()
    if kernels is not None and kernels.has_avx512():
        f32 = [(pack_linear_f32(quant.dequantize(w)), w.rows) for w in packed]
        del packed
        f32_bytes = sum(p.numel() * 4 for p, _ in f32)
        best, median = best_median([lambda: [kernels.linear_f32(x[p.shape[1]], p, None, n, None) for p, n in f32]],
                                   max(5, args.iters // 4))
        print(f"  linear_f32 (dequantized)  {best * 1e3:6.2f} ms (median {median * 1e3:.2f}), "
              f"{f32_bytes / best / 1e9:5.1f} GB/s of {f32_bytes / 1e6:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", default=["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K",
                                                       "Q4_K", "Q5_K", "Q6_K"])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--isas", nargs="+", default=["avx512vnni", "avx2"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--hot", action="store_true", help="one copy of each weight, from cache")
    parser.add_argument("--skip-shapes", action="store_true", help="only the bandwidth and the token's GEMVs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quant ISAs here: {quant.isas()}; "
          f"microseconds per call: best (median) of {args.iters}, weights {'hot' if args.hot else 'cold'}")
    if not args.skip_shapes:
        bench_shapes(args)
    token_gemvs(args, memory_bandwidth())


if __name__ == "__main__":
    main()
