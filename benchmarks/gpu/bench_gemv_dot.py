"""Can a Triton GEMV built on tl.dot match cuBLAS's bandwidth at batch 1, so PDL and fusion pay?

bench_gemv_splitk.py's GEMV (elementwise multiply and sum) streamed weights at 1.4-2.5 TB/s
against cuBLAS's 2.3-2.7: its loads are plain register loads, so few bytes are in flight per SM.
Loads that feed tl.dot are what Triton's pipeliner turns into asynchronous copies (cp.async, or
TMA through a tensor descriptor) with NUM_STAGES tiles in flight. So this GEMV is a skinny GEMM:
x is a [BLOCK_M = 16, K] tile (the batch's rows, here 1, the rest masked to zero), the tensor
cores' wasted rows cost nothing that matters at this size, and the weight tiles stream through
the pipeline. Around that, what only our own kernel can do:

* split-K with the reduce in the same launch (partials, an atomic count per column tile, the last
  program sums them in split order), instead of cuBLAS's separate reduce kernel;
* the o and down projections add into the residual in the epilogue (as cuBLAS's beta = 1 does);
* gate_up's epilogue applies SiLU-and-mul and the folded norm's 1 / rms(h) (the engine's
  silu_and_mul roundings), so the SiLU launch is gone;
* programmatic dependent launch (PDL): a program loads its first weight tile before
  `griddepcontrol.wait`, so the next GEMV's launch and first loads overlap this one's tail.

Measured: each projection alone (cold weights, a CUDA graph of rotated copies) over launch shapes
against cuBLAS (gate_up against cuBLAS + silu_and_mul); then the 32 folded layers of the 8B shape
in one graph, attention left out, cuBLAS against ours without and with PDL.

    python benchmarks/gpu/bench_gemv_dot.py [--quick]        # on the GPU
    TRITON_INTERPRET=1 python benchmarks/gpu/bench_gemv_dot.py --check   # CPU: against torch
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pagedllm.kernels.triton.activation import silu_and_mul  # noqa: E402

HIDDEN, INTER, QKV, EPS = 4096, 14336, 6144, 1e-5
SHAPES = {"qkv": (HIDDEN, QKV), "o": (HIDDEN, HIDDEN), "gate_up": (HIDDEN, 2 * INTER), "down": (INTER, HIDDEN)}


@triton.jit
def _load_w(w_ptr, k0, cols, stride_w, BLOCK_K: tl.constexpr, TMA: tl.constexpr, col0):
    """The [BLOCK_K, BLOCK_N] weight tile at rows k0.., columns `cols` (col0 with TMA)."""
    if TMA:
        return w_ptr.load([k0, col0])
    ks = k0 + tl.arange(0, BLOCK_K)
    return tl.load(w_ptr + ks.to(tl.int64)[:, None] * stride_w + cols[None, :])


@triton.jit
def _inv_rms_rows(norm_ptr, rows, row_ok, stride_norm, eps, HIDDEN_: tl.constexpr, CHUNK: tl.constexpr):
    """[BLOCK_M] float32: 1 / sqrt(mean(h^2) + eps) of each row of norm_ptr."""
    total = tl.zeros([rows.shape[0]], tl.float32)
    for c in range(0, HIDDEN_, CHUNK):
        hc = c + tl.arange(0, CHUNK)
        h = tl.load(norm_ptr + rows[:, None] * stride_norm + hc[None, :], mask=row_ok[:, None] & (hc < HIDDEN_)[None, :],
                    other=0.0).to(tl.float32)
        total += tl.sum(h * h, 1)
    return tl.rsqrt(total / HIDDEN_ + eps)


@triton.jit
def _epilogue(out_ptr, gate, up, rows, row_ok, cols, norm_ptr, stride_out, stride_norm, eps,
              ACCUMULATE: tl.constexpr, GATED: tl.constexpr, HIDDEN_: tl.constexpr):
    """Store the finished [BLOCK_M, BLOCK_N] sums: plain, added into out, or SiLU-and-mul of the
    gate and up sums scaled by each row's 1 / rms(h), rounded as the engine's silu_and_mul does."""
    dtype = out_ptr.dtype.element_ty
    ptrs = out_ptr + rows[:, None] * stride_out + cols[None, :]
    mask = row_ok[:, None]
    if GATED:
        inv = _inv_rms_rows(norm_ptr, rows, row_ok, stride_norm, eps, HIDDEN_, 512)[:, None]
        g = (gate.to(dtype).to(tl.float32) * inv).to(dtype).to(tl.float32)
        u = (up.to(dtype).to(tl.float32) * inv).to(dtype).to(tl.float32)
        silu = (g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32)
        tl.store(ptrs, (silu * u).to(dtype), mask=mask)
    elif ACCUMULATE:
        tl.store(ptrs, (gate + tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)).to(dtype), mask=mask)
    else:
        tl.store(ptrs, gate.to(dtype), mask=mask)


@triton.jit
def _gemv_dot_kernel(
    out_ptr,  # [M, N_OUT]: written, or added into with ACCUMULATE
    x_ptr,  # [M, K], row stride stride_x
    w_ptr,  # [K, N_W] (row stride stride_w), or its TensorDescriptor with TMA; GATED: | gate | up |
    part_ptr,  # [SPLIT_K, 1 + GATED, BLOCK_M, N_OUT] float32 partials (SPLIT_K > 1)
    counter_ptr,  # [N_OUT / BLOCK_N] int32, zero between launches (SPLIT_K > 1)
    norm_ptr,  # [M, HIDDEN_] the un-normalised hidden state (GATED)
    M, stride_x, stride_w, stride_out, stride_norm, eps,
    N_OUT: tl.constexpr, K_PER_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, ACCUMULATE: tl.constexpr, GATED: tl.constexpr,
    HIDDEN_: tl.constexpr, TMA: tl.constexpr, PDL: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    col0 = pid_n * BLOCK_N
    cols = col0 + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < M
    k_lo = pid_k * K_PER_SPLIT
    # The first weight tiles do not depend on the previous kernel: ask for them before waiting.
    w = _load_w(w_ptr, k_lo, cols, stride_w, BLOCK_K, TMA, col0)
    if GATED:
        w_up = _load_w(w_ptr, k_lo, cols + N_OUT, stride_w, BLOCK_K, TMA, col0 + N_OUT)
    if PDL:
        tl.extra.cuda.gdc_wait()
    ks = k_lo + tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + rows[:, None] * stride_x + ks[None, :], mask=row_ok[:, None], other=0.0)
    acc = tl.dot(x, w)
    acc_up = acc
    if GATED:
        acc_up = tl.dot(x, w_up)
    for i in tl.range(1, K_PER_SPLIT // BLOCK_K, num_stages=NUM_STAGES):
        k0 = k_lo + i * BLOCK_K
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows[:, None] * stride_x + ks[None, :], mask=row_ok[:, None], other=0.0)
        acc = tl.dot(x, _load_w(w_ptr, k0, cols, stride_w, BLOCK_K, TMA, col0), acc)
        if GATED:
            acc_up = tl.dot(x, _load_w(w_ptr, k0, cols + N_OUT, stride_w, BLOCK_K, TMA, col0 + N_OUT), acc_up)
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    if SPLIT_K == 1:
        _epilogue(out_ptr, acc, acc_up, rows, row_ok, cols, norm_ptr, stride_out, stride_norm, eps,
                  ACCUMULATE, GATED, HIDDEN_)
    else:
        parts: tl.constexpr = 2 if GATED else 1
        tile = rows[:, None] * N_OUT + cols[None, :]
        part = part_ptr + pid_k * parts * BLOCK_M * N_OUT
        tl.store(part + tile, acc, mask=row_ok[:, None])
        if GATED:
            tl.store(part + BLOCK_M * N_OUT + tile, acc_up, mask=row_ok[:, None])
        tl.debug_barrier()  # every thread's partials before the count (released at GPU scope)
        if tl.atomic_add(counter_ptr + pid_n, 1, sem="acq_rel") == SPLIT_K - 1:
            gate = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for s in range(SPLIT_K):  # in split order: the same sum whichever program is last
                part = part_ptr + s * parts * BLOCK_M * N_OUT
                gate += tl.load(part + tile, mask=row_ok[:, None], other=0.0, cache_modifier=".cg")
                if GATED:
                    up += tl.load(part + BLOCK_M * N_OUT + tile, mask=row_ok[:, None], other=0.0,
                                  cache_modifier=".cg")
            _epilogue(out_ptr, gate, up, rows, row_ok, cols, norm_ptr, stride_out, stride_norm, eps,
                      ACCUMULATE, GATED, HIDDEN_)
            tl.atomic_xchg(counter_ptr + pid_n, 0)


class DotGemv:
    """x [M <= 16, K] @ weight_t [K, N] into `out` (added into it with accumulate); gated: the
    weight is | gate | up | and the output silu(gate * r) * (up * r), r = 1 / rms(norm row). Owns
    its partials and counters, so a graph can replay a chain of them."""

    def __init__(self, weight_t: torch.Tensor, *, block_n: int = 64, block_k: int = 128, split_k: int = 4,
                 num_stages: int = 4, num_warps: int = 4, tma: bool = False, pdl: bool = False,
                 gated: bool = False) -> None:
        k, n_w = weight_t.shape
        n_out = n_w // 2 if gated else n_w
        assert weight_t.stride(-1) == 1 and n_out % block_n == 0 and k % (split_k * block_k) == 0, (k, n_w)
        self.weight_t, self.n_out, self.k_per_split, self.gated = weight_t, n_out, k // split_k, gated
        self.block_n, self.block_k, self.split_k = block_n, block_k, split_k
        self.num_stages, self.num_warps, self.tma, self.pdl = num_stages, num_warps, tma, pdl
        self.w_arg = TensorDescriptor.from_tensor(weight_t, [block_k, block_n]) if tma else weight_t
        dev = weight_t.device
        self.part = torch.empty(split_k * (2 if gated else 1) * 16 * n_out, dtype=torch.float32, device=dev)
        self.counters = torch.zeros(n_out // block_n, dtype=torch.int32, device=dev)

    def __call__(self, x: torch.Tensor, out: torch.Tensor, accumulate: bool = False,
                 norm: torch.Tensor | None = None) -> torch.Tensor:
        assert x.dim() == 2 and x.shape[0] <= 16 and x.stride(-1) == 1 and out.stride(-1) == 1
        assert (norm is not None) == self.gated
        norm_arg = norm if norm is not None else x
        _gemv_dot_kernel[(self.n_out // self.block_n, self.split_k)](
            out, x, self.w_arg, self.part, self.counters, norm_arg,
            x.shape[0], x.stride(0), self.weight_t.stride(0), out.stride(0), norm_arg.stride(0), EPS,
            N_OUT=self.n_out, K_PER_SPLIT=self.k_per_split, BLOCK_M=16, BLOCK_N=self.block_n,
            BLOCK_K=self.block_k, SPLIT_K=self.split_k, ACCUMULATE=accumulate, GATED=self.gated,
            HIDDEN_=norm_arg.shape[1], TMA=self.tma, PDL=self.pdl, NUM_STAGES=self.num_stages,
            num_warps=self.num_warps, num_stages=self.num_stages, **({"launch_pdl": True} if self.pdl else {}),
        )
        return out


def reference(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, accumulate: bool,
              norm: torch.Tensor | None) -> torch.Tensor:
    """What the engine computes today: cuBLAS (torch.matmul / addmm_) and silu_and_mul."""
    if norm is not None:
        return silu_and_mul(torch.matmul(x, w), norm, EPS)
    if accumulate:
        return out.clone().addmm_(x, w)
    return torch.matmul(x, w)


def check(device: str) -> None:
    """Each kind of call on small shapes against the reference, unsplit and split, float32 sums
    compared within bf16 rounding. On the CPU this runs under TRITON_INTERPRET=1."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        import runpy  # the test suite's fixes for the interpreter's bfloat16 dot and rounding

        runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "..", "tests", "kernels", "conftest.py"))
    torch.manual_seed(0)
    k, n, hidden = 512, 256, 256
    failures = 0
    for m, gated, accumulate, split_k, tma in itertools.product((1, 3), (False, True), (False, True), (1, 4),
                                                                 (False, True)):
        if gated and accumulate:
            continue
        w = (torch.randn(k, 2 * n if gated else n) / k**0.5).to(torch.bfloat16).to(device)
        x = torch.randn(m, k, dtype=torch.bfloat16, device=device)
        norm = torch.randn(m, hidden, dtype=torch.bfloat16, device=device) if gated else None
        out = torch.randn(m, n, dtype=torch.bfloat16, device=device)
        want = reference(x, w, out, accumulate, norm).float()
        gemv = DotGemv(w, block_n=64, block_k=64, split_k=split_k, num_stages=2, tma=tma, gated=gated)
        for _ in range(2):  # twice: the counters must be back at zero after a launch
            got = gemv(x, out.clone(), accumulate, norm).float()
        err = ((got - want).norm() / want.norm()).item()
        ok = err < 2e-2
        failures += not ok
        print(f"m={m} gated={gated} accumulate={accumulate} split_k={split_k} tma={tma}: rel err {err:.1e}"
              f"{'' if ok else '  FAIL'}", flush=True)
    if failures:
        raise SystemExit(f"{failures} checks failed")


def _graph_us(fns: list) -> float:  # type: ignore[type-arg]
    from benchmarks.gpu.bench_triton_kernels import capture_graph
    from benchmarks.gpu.ceilings import back_to_back_ms

    return 1e3 * back_to_back_ms(capture_graph(fns).replay, 20) / len(fns)


def sweep_projections(configs: list[dict]) -> dict[str, dict]:
    """Each projection alone, cold weights: cuBLAS (gate_up: with silu_and_mul) against our best
    launch shapes; returns the best config per projection."""
    best: dict[str, dict] = {}
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
        results = []
        for cfg in configs:
            if n_out % cfg["block_n"] or k % (cfg["split_k"] * cfg["block_k"]):
                continue
            programs = n_out // cfg["block_n"] * cfg["split_k"]
            if not 96 <= programs <= 1200:
                continue
            gemvs = [DotGemv(w, **cfg, gated=gated) for w in ws]
            got = gemvs[0](x, out.clone(), accumulate, norm).float()
            err = ((got - want).norm() / want.norm()).item()
            scratch = out.clone()
            results.append((_graph_us([lambda g=g: g(x, scratch, accumulate, norm) for g in gemvs]), cfg, err))
        results.sort(key=lambda r: r[0])
        print(f"{name:8s} K={k:6d} N={n:6d}  cuBLAS{' + SiLU' if gated else ''} {t_cublas:6.1f} us "
              f"({nbytes / t_cublas / 1e3:4.0f} GB/s)", flush=True)
        for t, cfg, err in results[:4]:
            print(f"           ours {t:6.1f} us ({nbytes / t / 1e3:4.0f} GB/s)  {cfg}  rel err {err:.1e}", flush=True)
        best[name] = results[0][1]
        del ws
    return best


def _layers_ours(gemvs: list[dict[str, DotGemv]], h: torch.Tensor, bufs: dict[str, torch.Tensor]) -> None:
    for g in gemvs:
        qkv = g["qkv"](h, bufs["qkv"])
        g["o"](qkv[:, :HIDDEN], h, accumulate=True)
        act = g["gate_up"](h, bufs["act"], norm=h)
        g["down"](act, h, accumulate=True)


def layer_chain(best: dict[str, dict], rounds: int) -> None:
    """The 32 folded 8B layers (attention left out) in one graph: cuBLAS + silu_and_mul against
    our GEMVs (4 launches a layer). One replay of each from the same h first: PDL on must equal
    PDL off bit for bit (the same kernels; a missing wait would race), both near cuBLAS."""
    from benchmarks.gpu.bench_fold_norms import folded, layer_weights
    from benchmarks.gpu.bench_triton_kernels import capture_graph
    from benchmarks.gpu.ceilings import back_to_back_ms

    torch.manual_seed(0)
    ws = layer_weights()
    h0 = torch.randn(1, HIDDEN, dtype=torch.bfloat16, device="cuda") * 0.1
    bufs = {"qkv": torch.empty(1, QKV, dtype=torch.bfloat16, device="cuda"),
            "act": torch.empty(1, INTER, dtype=torch.bfloat16, device="cuda")}
    hs = {name: h0.clone() for name in ("cuBLAS", "ours, PDL off", "ours, PDL on")}
    fns = {"cuBLAS": lambda: folded(ws, hs["cuBLAS"])}
    for pdl in (False, True):
        name = f"ours, PDL {'on' if pdl else 'off'}"
        gemvs = [{proj: DotGemv(w[proj], **{**best[proj], "pdl": pdl}, gated=proj == "gate_up") for proj in SHAPES}
                 for w in ws]
        fns[name] = lambda gemvs=gemvs, h=hs[name]: _layers_ours(gemvs, h, bufs)
    graphs = {name: capture_graph([fn]) for name, fn in fns.items()}
    for name, g in graphs.items():
        hs[name].copy_(h0)
        g.replay()
    torch.cuda.synchronize()
    ref = hs["cuBLAS"].float()
    for name in ("ours, PDL off", "ours, PDL on"):
        err = ((hs[name].float() - ref).norm() / ref.norm()).item()
        print(f"one replay, {name} against cuBLAS: rel err {err:.1e}", flush=True)
    print(f"PDL on equals PDL off bit for bit: {torch.equal(hs['ours, PDL on'], hs['ours, PDL off'])}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, g in graphs.items():
            times[name].append(back_to_back_ms(g.replay, 20))
    for name, ts in times.items():
        ts.sort()
        print(f"32 layers, {name:14s} median {ts[rounds // 2]:.3f} ms (min {ts[0]:.3f}, max {ts[-1]:.3f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="correctness on small shapes only (CPU: interpreter)")
    parser.add_argument("--quick", action="store_true", help="a few launch shapes only")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.check or device == "cpu":
        check(device)
        return
    check(device)
    torch.manual_seed(0)
    shapes = ((64, 128, 4, 4, True), (128, 128, 4, 4, False)) if args.quick else itertools.product(
        (64, 128), (128, 256), (1, 2, 4, 8), (4,), (False, True))
    configs = [dict(block_n=bn, block_k=bk, split_k=sk, num_stages=st, tma=tma) for bn, bk, sk, st, tma in shapes]
    print(f"{torch.cuda.get_device_name()}: batch-1 GEMVs of the 8B shape, up to {len(configs)} launch shapes",
          flush=True)
    layer_chain(sweep_projections(configs), args.rounds)


if __name__ == "__main__":
    main()
