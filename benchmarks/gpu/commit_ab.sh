#!/usr/bin/env bash
# One device call for a before/after A/B of two trees of the engine: this one and BASE, a copy of
# an earlier commit made beside it (`mkdir .ab_base && git archive C | tar -x -C .ab_base`, ignored
# and carried). Each tree runs its own benchmarks/gpu/bench_cuda.py in its own process, the two
# alternating for ROUNDS rounds: batch-1 latency and (THROUGHPUT=1, the default) 1000 x 512/128
# throughput of the given shapes, the engine's defaults, random weights.
# Usage: [ROUNDS=1] [THROUGHPUT=1] bash benchmarks/gpu/commit_ab.sh OUT BASE [shape ...]
set -u
out=${1:?output folder}
base=${2:?baseline tree}
shift 2
shapes=${*:-llama3-8b}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
extra=""
[ "${THROUGHPUT:-1}" = 1 ] || extra=--skip-throughput
for round in $(seq "${ROUNDS:-1}"); do
    for tree in "$base" .; do
        echo "== round $round, tree $tree" | tee -a "$out/ab.txt"
        (cd "$tree" && timeout 280 python benchmarks/gpu/bench_cuda.py --shapes $shapes --skip-hf --ab none $extra) \
            2>&1 | grep -v "^20..-..-.. " | tail -14 | tee -a "$out/ab.txt"
    done
done
