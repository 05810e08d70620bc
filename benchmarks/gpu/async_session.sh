#!/usr/bin/env bash
# One device call: GPU tests (async scheduling on by default) and the Triton kernel tests, then
# the latency (with and without async scheduling on one engine) and throughput of the given
# shapes, then a host timeline and a kernel profile of a Llama-3-8B batch-1 decode.
# Usage: bash benchmarks/gpu/async_session.sh OUT [shape ...]
set -u
out=${1:?output folder}
shift
shapes=${*:-llama3-8b qwen3-0.6b}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
timeout 300 python -m pytest -q -x -p no:cacheprovider tests/gpu tests/kernels/test_triton_attention.py \
    tests/kernels/test_triton_layers.py 2>&1 | grep -v "^20..-..-.. " | tail -15 | tee "$out/tests.txt"
timeout 200 python benchmarks/gpu/bench_cuda.py --shapes $shapes --skip-hf \
    --output-json "$out/bench.json" 2>&1 | grep -v "^20..-..-.. " | tail -40 | tee "$out/bench.txt"
timeout 80 python benchmarks/gpu/check_cuda_path.py --shape llama3-8b --timeline --profile "$out/profile.txt" \
    2>&1 | grep -v "^pagedllm" | tail -40 | tee "$out/check.txt"
