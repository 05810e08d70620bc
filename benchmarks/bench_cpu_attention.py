"""The C++ paged decode attention on the default model's shape (9 q / 3 kv heads of 64, float32),
timed over 30 layers' caches so the K/V come from memory as in a decode step. With --baseline,
another version of kernels/cpu/decode_attention.cpp is built beside it (with the other sources
as they are) and the two run interleaved in one process, which this noisy 2-core machine needs
for a fair A/B:

    git show HEAD~1:pagedllm/kernels/cpu/decode_attention.cpp > /tmp/old.cpp
    python benchmarks/bench_cpu_attention.py --baseline /tmp/old.cpp
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.cpp_extension import load

from pagedllm.kernels.cpu import BUILD_FLAGS, DECODE_ATTENTION_SOURCE, SOURCES


def build(name: str, decode_source: str):  # type: ignore[no-untyped-def]
    """The kernels with `decode_source` as the decode attention, built as the engine builds them,
    under their own module name."""
    others = [s for s in SOURCES if s != DECODE_ATTENTION_SOURCE]
    # The include path lets a baseline copied elsewhere find the kernels' headers.
    return load(name=name, sources=[decode_source, *others], verbose=False,
                extra_include_paths=[os.path.dirname(DECODE_ATTENTION_SOURCE)], **BUILD_FLAGS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=None, help="another decode_attention.cpp to compare against")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    mods = {"current": build("pagedllm_cpu_kernels_bench", DECODE_ATTENTION_SOURCE)}
    if args.baseline:
        mods["baseline"] = build("pagedllm_cpu_kernels_baseline", args.baseline)
    batch, ctx, heads, kv_heads, head, block, layers = args.batch, args.context, 9, 3, 64, 16, 30
    num_blocks = batch * -(-ctx // block)
    caches = [torch.randn(2, num_blocks, block, kv_heads, head) for _ in range(layers)]
    q = torch.randn(batch, heads, head)
    table = torch.arange(num_blocks, dtype=torch.int32).view(batch, -1)
    seq_lens = torch.full((batch,), ctx, dtype=torch.int32)
    outs = {name: torch.empty_like(q) for name in mods}
    times: dict[str, list[float]] = {name: [] for name in mods}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, mod in mods.items():
            start = time.perf_counter()
            for cache in caches:
                mod.paged_decode_attention(outs[name], q, cache[0], cache[1], table, seq_lens, 0.125)
            times[name].append(time.perf_counter() - start)
    nbytes = layers * batch * ctx * kv_heads * head * 2 * 4
    for name, ts in times.items():
        ts = sorted(ts[1:])
        med = ts[len(ts) // 2]
        print(f"{name:8s} median {1e3 * med:6.2f} ms, min {1e3 * ts[0]:6.2f} ms per {layers} layers "
              f"({nbytes / med / 1e9:.1f} GB/s of K/V)")
    if "baseline" in outs:
        print(f"max |current - baseline| = {(outs['current'] - outs['baseline']).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
