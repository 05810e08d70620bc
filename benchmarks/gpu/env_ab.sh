#!/usr/bin/env bash
# One device call for an A/B of a kernel choice (README, "Kernel choices") set through its
# environment variable AB_VAR (default PAGEDLLM_FOLD_NORMS; e.g. PAGEDLLM_TRITON_SAMPLER, or
# PAGEDLLM_SKINNY_GEMM with AB_VALUES="auto off"): (TESTS=1) the GPU tests and the Triton kernel
# tests, then batch-1 latency of the given shapes with AB_VAR set to each of AB_VALUES (default
# "1 0"), each setting in its own process, alternating for ROUNDS rounds; THROUGHPUT=1 adds the 1000-prompt throughput; CHECK=1
# then profiles a Llama-3-8B batch-1 decode step's kernels (with the defaults); SAMPLER=1 first
# runs bench_sampler.py (torch against Triton inverse-CDF stage, in one process).
# TEST_PATHS overrides which tests run.
# Usage: [AB_VAR=...] [AB_VALUES="1 0"] [TESTS=1] [TEST_PATHS=...] [ROUNDS=2] [THROUGHPUT=0] [CHECK=0] [SAMPLER=0]
#        bash benchmarks/gpu/env_ab.sh OUT [shape ...]
set -u
out=${1:?output folder}
shift
shapes=${*:-llama3-8b}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
if [ "${TESTS:-1}" = 1 ]; then
    timeout 340 python -m pytest -q -x -p no:cacheprovider ${TEST_PATHS:-tests/gpu tests/kernels/test_triton_attention.py tests/kernels/test_triton_sampling.py \
        tests/kernels/test_triton_layers.py tests/kernels/test_triton_skinny_gemm.py} 2>&1 | grep -v "^20..-..-.. " | tail -15 | tee "$out/tests.txt"
fi
if [ "${SAMPLER:-0}" = 1 ]; then
    timeout 120 python benchmarks/gpu/bench_sampler.py 2>&1 | tail -20 | tee "$out/sampler.txt"
fi
var=${AB_VAR:-PAGEDLLM_FOLD_NORMS}
extra=--skip-throughput
[ "${THROUGHPUT:-0}" = 1 ] && extra=""
for round in $(seq "${ROUNDS:-2}"); do
    for value in ${AB_VALUES:-1 0}; do
        echo "== round $round, $var=$value" | tee -a "$out/ab.txt"
        env "$var=$value" timeout 200 python benchmarks/gpu/bench_cuda.py --shapes $shapes --skip-hf \
            --ab none $extra 2>&1 | grep -v "^20..-..-.. " | tail -12 | tee -a "$out/ab.txt"
    done
done
if [ "${CHECK:-0}" = 1 ]; then
    timeout 80 python benchmarks/gpu/check_cuda_path.py --shape llama3-8b --timeline --profile "$out/profile.txt" \
        2>&1 | grep -v "^pagedllm" | tail -40 | tee "$out/check.txt"
fi
