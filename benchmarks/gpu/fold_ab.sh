#!/usr/bin/env bash
# One device call: (TESTS=1) the GPU tests and the Triton kernel tests, then batch-1 latency of the
# given shapes with the norms folded (PAGEDLLM_FOLD_NORMS=1, the default) and not, each setting in
# its own process, alternating for ROUNDS rounds; THROUGHPUT=1 adds the 1000-prompt throughput;
# CHECK=1 then profiles a folded Llama-3-8B batch-1 decode step's kernels.
# TEST_PATHS overrides which tests run.
# Usage: [TESTS=1] [TEST_PATHS=...] [ROUNDS=2] [THROUGHPUT=0] [CHECK=0] bash benchmarks/gpu/fold_ab.sh OUT [shape ...]
set -u
out=${1:?output folder}
shift
shapes=${*:-llama3-8b}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
if [ "${TESTS:-1}" = 1 ]; then
    timeout 300 python -m pytest -q -x -p no:cacheprovider ${TEST_PATHS:-tests/gpu tests/kernels/test_triton_attention.py tests/kernels/test_triton_sampling.py \
        tests/kernels/test_triton_layers.py} 2>&1 | grep -v "^20..-..-.. " | tail -15 | tee "$out/tests.txt"
fi
extra=--skip-throughput
[ "${THROUGHPUT:-0}" = 1 ] && extra=""
for round in $(seq "${ROUNDS:-2}"); do
    for fold in 1 0; do
        echo "== round $round, PAGEDLLM_FOLD_NORMS=$fold" | tee -a "$out/ab.txt"
        PAGEDLLM_FOLD_NORMS=$fold timeout 200 python benchmarks/gpu/bench_cuda.py --shapes $shapes --skip-hf \
            --ab none $extra 2>&1 | grep -v "^20..-..-.. " | tail -12 | tee -a "$out/ab.txt"
    done
done
if [ "${CHECK:-0}" = 1 ]; then
    timeout 80 python benchmarks/gpu/check_cuda_path.py --shape llama3-8b --timeline --profile "$out/profile.txt" \
        2>&1 | grep -v "^pagedllm" | tail -40 | tee "$out/check.txt"
fi
