#!/usr/bin/env bash
# One device call: the L2-prefetch tests, then batch-1 latency with the prefetch off ("0") and at
# the given window sizes (PAGEDLLM_L2_PREFETCH_MB="attention,norm,activation" MiB), each in its
# own process, alternating, for the given shapes.
# Usage: bash benchmarks/gpu/prefetch_ab.sh OUT "16,4,4 32,8,8" [shape ...]
set -u
out=${1:?output folder}
configs=${2:-16,4,4}
shift 2
shapes=${*:-llama3-8b}
mkdir -p "$out"
timeout 200 python -m pytest -q -x -p no:cacheprovider tests/gpu/test_l2_prefetch_gpu.py \
    tests/kernels/test_triton_layers.py tests/kernels/test_triton_attention.py 2>&1 | tail -5 | tee "$out/tests.txt"
for round in 1 2; do
    for cfg in 0 $configs; do
        echo "== round $round, PAGEDLLM_L2_PREFETCH_MB=$cfg" | tee -a "$out/ab.txt"
        PAGEDLLM_L2_PREFETCH_MB=$cfg timeout 120 python benchmarks/gpu/bench_cuda.py --shapes $shapes --skip-hf \
            --skip-throughput --ab none 2>&1 | grep -E "^\[|^[a-z0-9.-]+ \|" | tee -a "$out/ab.txt"
    done
done
