"""Microbenchmarks of the Triton kernels on a GPU, against torch, with the card's copy bandwidth
measured in the same run as the ceiling.

    python benchmarks/gpu/bench_triton_kernels.py [--out DIR] [--quick]

Decode attention uses Llama-3-8B heads (32 q / 8 kv, head 128), bf16, block_size 16, random
K/V in random blocks. Bytes counted are the fewest a decode must move: every K and V element of
every context read once, q read and out written once. Baselines, both on the same data:
* sdpa_dense: torch SDPA on K/V already contiguous per request (no paging: a lower bound on
  what a paged kernel can hope for);
* torch_paged: the torch backend's decode path (gather through the block table, then SDPA).
Decode kernels are timed as a decode step runs them, back to back in a CUDA graph, over up to
16 rotated input sets (each read cold: do_bench clears L2 before every replay); medians.

Results (H100 80GB HBM3, torch 2.11, triton 3.6, 2026-11-27; copy bandwidth 3019 GB/s read+write),
decode attention, Llama-3-8B heads, bf16, us per call (GB/s, % of copy):

    batch  ctx   splits  triton             sdpa_dense  torch_paged
      1    128     1       6.0 (  90,  3%)     7.3        12.9
      1    512     4       9.3 ( 228,  8%)    12.2        22.3
      1   2048    16      11.2 ( 753, 25%)    28.9        53.9
      1   8192    32      21.4 (1569, 52%)    96.6       185.4
     64    128     1      18.5 (1873, 62%)    20.8        52.6
     64    512     1      62.4 (2169, 72%)    62.4       170.6
     64   2048     1     195.7 (2749, 91%)   193.9       596.8
     64   8192     1     723.6 (2969, 98%)   724.2      2260.2
    256    128     1      63.4 (2182, 72%)    63.4       183.6
    256    512     1     198.7 (2723, 90%)   194.2       620.3
    256   2048     1     726.2 (2963, 98%)   707.1      2295.5
    256   8192     1    2829.3 (3037,101%)  2783.1      8941.6

Prefill (one request, 32/8 heads): 2048 new tokens from scratch 133 us = 259 TFLOP/s (SDPA's
flash kernel on dense MHA K/V: 90 us); 512 new after 3584 cached 111 us = 290 TFLOP/s (SDPA with
a mask: 129 us). Fused elementwise at 4096 tokens: RMSNorm+residual 51 us (87% of copy; torch
239 us), SiLU-and-mul 127 us (92%; torch 337 us), rotary q,k 36 us (78%; torch 212 us).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import triton  # noqa: E402

from pagedllm.attention.base import AttentionMetadata  # noqa: E402
from pagedllm.attention.torch_ref import _decode_attention, _decode_plan  # noqa: E402
from pagedllm.attention.triton_paged import TritonPagedAttentionBackend  # noqa: E402
from pagedllm.kernels.triton.activation import silu_and_mul  # noqa: E402
from pagedllm.kernels.triton.paged_attention import SplitWorkspace, paged_attention  # noqa: E402
from pagedllm.kernels.triton.rms_norm import rms_norm  # noqa: E402
from pagedllm.kernels.triton.rotary import rotary_embedding_  # noqa: E402
from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding  # noqa: E402

HEADS, KV_HEADS, HEAD, BLOCK = 32, 8, 128, 16
DTYPE = torch.bfloat16
DEV = "cuda"


def bench(fn, rep_ms: int = 60) -> float:  # type: ignore[no-untyped-def]
    """Median milliseconds per call."""
    # 100 ms of warm-up: the clocks drop while a new kernel variant compiles, and short kernels
    # timed right after read 2-3x slow (seen on the H100: 62 us, then 19 us for the same launch).
    return triton.testing.do_bench(fn, warmup=100, rep=rep_ms, return_mode="median")


def copy_bandwidth() -> float:
    """GB/s of a 2 GiB device-to-device copy, bytes read plus bytes written."""
    src = torch.randint(0, 256, (2**31,), dtype=torch.uint8, device=DEV)  # random, never zeros
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), 200)
    return 2 * src.numel() / ms / 1e6


class DecodeSetup:
    """One big random cache; each (batch, context) gets its own random blocks and table."""

    def __init__(self, max_tokens: int) -> None:
        self.num_blocks = max_tokens // BLOCK + 1
        self.cache = torch.randn(2, self.num_blocks, BLOCK, KV_HEADS, HEAD, device=DEV, dtype=DTYPE)

    def metadata(self, batch: int, ctx: int) -> AttentionMetadata:
        blocks_per_req = -(-ctx // BLOCK)
        perm = torch.randperm(self.num_blocks, device=DEV)[: batch * blocks_per_req]
        table = perm.view(batch, blocks_per_req).int()
        seq_lens = torch.full((batch,), ctx, dtype=torch.int32, device=DEV)
        return AttentionMetadata(
            num_actual_tokens=batch, num_reqs=batch,
            query_start_loc=torch.arange(batch + 1, dtype=torch.int32, device=DEV), seq_lens=seq_lens,
            block_table=table, slot_mapping=torch.full((batch,), -1, dtype=torch.int64, device=DEV),
            max_query_len=1, max_seq_len=ctx, block_size=BLOCK,
            query_start_loc_cpu=list(range(batch + 1)), seq_lens_cpu=[ctx] * batch)


def decode_bytes(batch: int, ctx: int) -> int:
    elem = torch.finfo(DTYPE).bits // 8
    return elem * (2 * batch * ctx * KV_HEADS * HEAD + 2 * batch * HEADS * HEAD)


def triton_decode(setup: DecodeSetup, md: AttentionMetadata, q: torch.Tensor, splits: int | None = None,
                  **launch: int):  # type: ignore[no-untyped-def]
    n = md.num_reqs
    splits = splits or TritonPagedAttentionBackend(max_num_seqs=256).num_splits(md, n, KV_HEADS)
    # A workspace of exactly the rows needed: sweeps force split counts past the backend's clamp.
    ws = SplitWorkspace.allocate(n * splits, HEADS, HEAD, torch.device(DEV))
    out = torch.empty_like(q)
    scale = 1 / math.sqrt(HEAD)

    def run() -> None:
        paged_attention(out, q, setup.cache, md.block_table, md.seq_lens, md.query_start_loc, n, n, scale,
                        True, splits, ws, **launch)
    return run, splits


def capture_graph(fns: list) -> torch.cuda.CUDAGraph:  # type: ignore[type-arg]
    """`fns` run once eagerly (compiles, allocations), then captured back to back in one graph."""
    for fn in fns:
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fns:
            fn()
    return graph


def graph_bench(fns: list) -> float:  # type: ignore[type-arg]
    """Median ms per call of `fns`, captured back to back in one CUDA graph: no launch gaps (a
    decode step runs in a graph too), and with each fn on its own memory every read is cold
    (do_bench clears L2 before each replay)."""
    return bench(capture_graph(fns).replay) / len(fns)


def rotations(nbytes: int) -> int:
    """How many independent input sets keep ~256 MB in flight per timed replay (at most 16)."""
    return max(1, min(16, (256 << 20) // nbytes))


def bench_decode(setup: DecodeSetup, batches: list[int], contexts: list[int], bw: float) -> list[dict]:
    rows = []
    scale = 1 / math.sqrt(HEAD)
    for batch in batches:
        for ctx in contexts:
            nbytes = decode_bytes(batch, ctx)
            sets = []
            for _ in range(rotations(nbytes)):
                md = setup.metadata(batch, ctx)
                q = torch.randn(batch, HEADS, HEAD, device=DEV, dtype=DTYPE)
                k = setup.cache[0][md.block_table.long()].view(batch, -1, KV_HEADS, HEAD)[:, :ctx]
                v = setup.cache[1][md.block_table.long()].view(batch, -1, KV_HEADS, HEAD)[:, :ctx]
                sets.append((md, q, k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()))
            runs = [triton_decode(setup, md, q) for md, q, _, _ in sets]
            splits = runs[0][1]
            t_triton = graph_bench([r for r, _ in runs])
            # GQA as the torch backend does it: the q heads of a kv head become its query rows.
            t_sdpa = graph_bench([
                (lambda q=q, k=k, v=v: F.scaled_dot_product_attention(
                    q.view(batch, KV_HEADS, HEADS // KV_HEADS, HEAD), k, v, scale=scale)) for _, q, k, v in sets])
            plans = [_decode_plan(md.block_table, md.seq_lens, ctx, BLOCK, DTYPE) for md, _, _, _ in sets]
            t_torch = graph_bench([(lambda q=s[1], p=p: _decode_attention(q, setup.cache, p, scale))
                                   for s, p in zip(sets, plans)])
            md, q, k, v = sets[0]
            out = torch.empty_like(q)
            ws = SplitWorkspace.allocate(batch * splits, HEADS, HEAD, torch.device(DEV))
            paged_attention(out, q, setup.cache, md.block_table, md.seq_lens, md.query_start_loc, batch, batch,
                            scale, True, splits, ws)
            ref = F.scaled_dot_product_attention(q.view(batch, KV_HEADS, -1, HEAD).float(), k.float(), v.float(),
                                                 scale=scale)
            err = ((out.float() - ref.reshape(batch, HEADS, HEAD)).norm() / ref.norm()).item()
            rows.append(dict(batch=batch, ctx=ctx, splits=splits, rotations=len(sets), triton_us=t_triton * 1e3,
                             sdpa_dense_us=t_sdpa * 1e3, torch_paged_us=t_torch * 1e3,
                             triton_gbs=nbytes / t_triton / 1e6, sdpa_gbs=nbytes / t_sdpa / 1e6,
                             pct_of_copy=100 * nbytes / t_triton / 1e6 / bw, rel_err=err))
            del sets, plans, runs
            print(f"decode b={batch:4d} ctx={ctx:5d} splits={splits:2d}  triton {t_triton*1e3:8.1f} us "
                  f"({nbytes / t_triton / 1e6:7.0f} GB/s, {rows[-1]['pct_of_copy']:4.0f}% of copy)  "
                  f"sdpa_dense {t_sdpa*1e3:8.1f} us  torch_paged {t_torch*1e3:8.1f} us  err {err:.1e}", flush=True)
    return rows


def _decode_runs(setup: DecodeSetup, batch: int, ctx: int, splits: int | None = None, **launch: int) -> list:  # type: ignore[type-arg]
    runs = []
    for _ in range(rotations(decode_bytes(batch, ctx))):
        md = setup.metadata(batch, ctx)
        runs.append(triton_decode(setup, md, torch.randn(batch, HEADS, HEAD, device=DEV, dtype=DTYPE), splits,
                                  **launch))
    return runs


def sweep_splits(setup: DecodeSetup, cases: list[tuple[int, int]]) -> list[dict]:
    rows = []
    for batch, ctx in cases:
        chosen = _decode_runs(setup, batch, ctx)[0][1]
        times = {s: graph_bench([r for r, _ in _decode_runs(setup, batch, ctx, s)]) * 1e3
                 for s in sorted({1, 2, 4, 8, 16, 32, chosen})}
        best = min(times, key=times.get)
        rows.append(dict(batch=batch, ctx=ctx, chosen=chosen, best=best, times_us=times))
        print(f"splits b={batch} ctx={ctx}: chosen {chosen} ({times[chosen]:.1f} us), best {best} "
              f"({times[best]:.1f} us)  " + " ".join(f"{s}:{t:.1f}" for s, t in times.items()), flush=True)
    return rows


def sweep_launch(setup: DecodeSetup, cases: list[tuple[int, int]]) -> list[dict]:
    rows = []
    for batch, ctx in cases:
        for tile_n in (32, 64, 128):
            for warps, stages in ((4, 2), (4, 3), (8, 2)):
                runs = _decode_runs(setup, batch, ctx, tile_n=tile_n, num_warps=warps, num_stages=stages)
                t = graph_bench([r for r, _ in runs]) * 1e3
                rows.append(dict(batch=batch, ctx=ctx, tile_n=tile_n, warps=warps, stages=stages, us=t))
                print(f"launch b={batch} ctx={ctx} tile_n={tile_n} warps={warps} stages={stages}: {t:.1f} us", flush=True)
    return rows


def bench_prefill(shapes: tuple[tuple[int, int], ...] = ((0, 2048), (3584, 512))) -> list[dict]:
    """One request per shape (cached, new): by default a 2048-token prefill from scratch and a
    512-token chunk after 3584 cached tokens."""
    rows = []
    for cached, new in shapes:
        seq = cached + new
        nblk = -(-seq // BLOCK)
        cache = torch.randn(2, nblk + 1, BLOCK, KV_HEADS, HEAD, device=DEV, dtype=DTYPE)
        table = torch.randperm(nblk + 1, device=DEV)[:nblk].int()[None]
        q = torch.randn(new, HEADS, HEAD, device=DEV, dtype=DTYPE)
        out = torch.empty_like(q)
        qsl = torch.tensor([0, new], dtype=torch.int32, device=DEV)
        sl = torch.tensor([seq], dtype=torch.int32, device=DEV)
        pairs = sum(cached + i + 1 for i in range(new))
        shapes = {}
        for block_m, tile_n, warps, stages in ((64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 2), (128, 64, 8, 3),
                                               (128, 128, 8, 2), (64, 128, 4, 2), (128, 32, 4, 3)):
            shapes[(block_m, tile_n, warps, stages)] = bench(lambda: paged_attention(
                out, q, cache, table, sl, qsl, new, 1, 0.088, False, block_m=block_m, tile_n=tile_n,
                num_warps=warps, num_stages=stages))
        t = shapes[(64, 64, 4, 2)]  # the default
        print("  prefill launch shapes (block_m, tile_n, warps, stages): " + "  ".join(
            f"{k}: {4 * HEADS * HEAD * pairs / v / 1e9:.0f}" for k, v in shapes.items()) + " TFLOP/s", flush=True)
        tflops = 4 * HEADS * HEAD * pairs / t / 1e9
        qd = q.transpose(0, 1)[None]
        kd = torch.randn(1, HEADS, seq, HEAD, device=DEV, dtype=DTYPE)
        vd = torch.randn_like(kd)
        if cached == 0:
            t_sdpa = bench(lambda: F.scaled_dot_product_attention(qd, kd, vd, is_causal=True))
        else:  # dense prefix + causal chunk as an explicit mask (SDPA has no bottom-right causal flag)
            mask = torch.ones(new, seq, dtype=torch.bool, device=DEV).tril(cached)
            t_sdpa = bench(lambda: F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask))
        rows.append(dict(cached=cached, new=new, triton_us=t * 1e3, tflops=tflops, sdpa_us=t_sdpa * 1e3))
        print(f"prefill cached={cached} new={new}: triton {t*1e3:.1f} us ({tflops:.0f} TFLOP/s)  "
              f"sdpa(dense, MHA) {t_sdpa*1e3:.1f} us", flush=True)
    return rows


def bench_elementwise(bw: float, token_counts: tuple[int, ...] = (1, 256, 4096)) -> list[dict]:
    """RMSNorm (+ residual, hidden 4096), SiLU-and-mul (intermediate 14336), rotary (32 + 8 heads)."""
    rows: list[dict] = []
    for tokens in token_counts:
        x = torch.randn(tokens, 4096, device=DEV, dtype=DTYPE)
        r = torch.randn_like(x)
        w = torch.rand(4096, device=DEV, dtype=DTYPE)

        def native_norm() -> None:
            s = x + r
            (w * F.rms_norm(s.float(), (4096,), eps=1e-5).to(DTYPE), s)
        gu = torch.randn(tokens, 2 * 14336, device=DEV, dtype=DTYPE)
        qk = torch.randn(tokens, (HEADS + 2 * KV_HEADS) * HEAD, device=DEV, dtype=DTYPE)
        qv, kv = qk[:, : HEADS * HEAD], qk[:, HEADS * HEAD: (HEADS + KV_HEADS) * HEAD]
        pos = torch.randint(0, 4096, (tokens,), device=DEV)
        with torch.device(DEV):
            rope = RotaryEmbedding(HEAD, HEAD, 8192, RopeConfig(theta=500000.0, rope_type="default", params={}))
        cases = {
            "rms_norm+residual": (lambda: rms_norm(x, w, 1e-5, r), native_norm, 4 * x.numel() * 2),
            "silu_and_mul": (lambda: silu_and_mul(gu), lambda: F.silu(gu[:, :14336]) * gu[:, 14336:], 3 * tokens * 14336 * 2),
            "rotary q,k": (lambda: rotary_embedding_(pos, qv, kv, rope.cos_sin_cache, HEAD),
                           lambda: rope.forward_native(pos, qv, kv), 2 * tokens * (HEADS + KV_HEADS) * HEAD * 2),
        }
        for name, (fn, native, nbytes) in cases.items():
            # In graphs, as a decode step runs them: at T=1 launch gaps would otherwise dominate.
            t = graph_bench([fn])
            t_native = graph_bench([native])
            rows.append(dict(op=name, tokens=tokens, triton_us=t * 1e3, torch_us=t_native * 1e3, gbs=nbytes / t / 1e6))
            print(f"{name:18s} T={tokens:5d}: triton {t*1e3:7.1f} us ({nbytes / t / 1e6:6.0f} GB/s, "
                  f"{100 * nbytes / t / 1e6 / bw:3.0f}% of copy)  torch {t_native*1e3:7.1f} us", flush=True)
    return rows


def sweep_graph_decode(setup: DecodeSetup, cases: list[tuple[int, int]], num_splits: int = 32) -> list[dict]:
    """Decode as a CUDA graph captured for max_model_len 4096 runs it (32 splits at batch 1, the
    used ones found per request): how many key tiles a split should take at least, and tile size."""
    rows = []
    for batch, ctx in cases:
        for min_tiles in (1, 2, 4):
            for tile_n in (32, 64):
                for stages in (2, 3):
                    runs = _decode_runs(setup, batch, ctx, num_splits, tile_n=tile_n, num_stages=stages,
                                        min_split_tiles=min_tiles)
                    t = graph_bench([r for r, _ in runs]) * 1e3
                    rows.append(dict(batch=batch, ctx=ctx, min_split_tiles=min_tiles, tile_n=tile_n, stages=stages,
                                     us=t))
                    print(f"graph decode b={batch} ctx={ctx} splits={num_splits} min_tiles={min_tiles} "
                          f"tile_n={tile_n} stages={stages}: {t:.1f} us", flush=True)
    return rows


def sweep_short_decode(setup: DecodeSetup, cases: list[tuple[int, int]]) -> list[dict]:
    """Batch-1 decode over a short context (the latency benchmark's 128-256 keys), in a graph:
    split count (32 as the captured graphs use at max_model_len 4096, or none), key tile, warps."""
    rows = []
    for batch, ctx in cases:
        for splits in (1, 32):
            for tile_n in (32, 64, 128):
                for warps in (2, 4, 8):
                    runs = _decode_runs(setup, batch, ctx, splits, tile_n=tile_n, num_warps=warps, min_split_tiles=1)
                    t = graph_bench([r for r, _ in runs]) * 1e3
                    rows.append(dict(batch=batch, ctx=ctx, splits=splits, tile_n=tile_n, warps=warps, us=t))
                    print(f"short decode b={batch} ctx={ctx} splits={splits} tile_n={tile_n} warps={warps}: "
                          f"{t:.1f} us", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder for bench_triton.json")
    parser.add_argument("--quick", action="store_true", help="fewer shapes, no sweeps")
    parser.add_argument("--only", choices=["decode", "sweeps", "graph_decode", "short_decode", "prefill",
                                           "elementwise"],
                        action="append",
                        help="run only these parts (repeatable); default all")
    args = parser.parse_args()
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    bw = copy_bandwidth()
    print(f"{props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, triton {triton.__version__}; "
          f"copy bandwidth {bw:.0f} GB/s (read + write)", flush=True)
    parts = set(args.only or ["decode", "sweeps", "graph_decode", "prefill", "elementwise"])
    if args.quick:
        parts.discard("sweeps")
    batches = [1, 64] if args.quick else [1, 64, 256]
    contexts = [128, 2048] if args.quick else [128, 512, 2048, 8192]
    result: dict = dict(device=props.name, copy_gbs=bw, decode=[])
    if parts & {"decode", "sweeps", "graph_decode", "short_decode"}:
        setup = DecodeSetup(max(batches) * max(contexts))
        if "decode" in parts:
            result["decode"] = bench_decode(setup, batches, contexts, bw)
        if "sweeps" in parts:
            result["splits"] = sweep_splits(setup, [(1, 2048), (1, 8192), (8, 8192), (64, 2048), (64, 8192)])
            result["launch"] = sweep_launch(setup, [(1, 8192), (64, 2048), (256, 8192)])
        if "graph_decode" in parts:
            result["graph_decode"] = sweep_graph_decode(setup, [(1, 192), (1, 1024), (1, 4096), (4, 1024)])
        if "short_decode" in parts:
            result["short_decode"] = sweep_short_decode(setup, [(1, 192), (1, 256)])
        del setup
    if "prefill" in parts:
        result["prefill"] = bench_prefill()
    if "elementwise" in parts:
        result["elementwise"] = bench_elementwise(bw)
    if args.out:
        with open(os.path.join(args.out, "bench_triton.json"), "w") as f:
            json.dump(result, f, indent=1)
    print("\nbatch  ctx  splits  triton_us  GB/s  %copy  sdpa_dense_us  torch_paged_us")
    for r in result["decode"]:
        print(f"{r['batch']:5d} {r['ctx']:5d} {r['splits']:6d} {r['triton_us']:10.1f} {r['triton_gbs']:5.0f} "
              f"{r['pct_of_copy']:5.0f} {r['sdpa_dense_us']:14.1f} {r['torch_paged_us']:15.1f}")


if __name__ == "__main__":
    main()
