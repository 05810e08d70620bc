#!/usr/bin/env bash
# One device call: the GPU tests and the Triton kernel tests, then latency and throughput of the
# given shapes with an A/B of one feature on the same engine (AB=piecewise by default, or async,
# or none), then (CHECK=1) a host timeline and a kernel profile of a Llama-3-8B batch-1 decode, and
# (SPEC=1) speculative decoding on the Llama-3-8B shape (bench_spec_cuda.py).
# Wheels the device lacks (xgrammar, apache-tvm-ffi: structured outputs' GPU test) travel in .whl
# (git-ignored; carry it): they are installed into /tmp/site first.
# One call must stay under 600 s: TESTS and SPEC together want BENCH=0.
# Usage: [AB=piecewise] [TESTS=0] [TESTS_TIMEOUT=310] [BENCH=0] [CHECK=1] [SPEC=1] bash benchmarks/gpu/session.sh OUT [shape ...]
set -u
out=${1:?output folder}
shift
shapes=${*:-llama3-8b qwen3-0.6b}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
if [ "${TESTS:-1}" = 1 ]; then
    timeout "${TESTS_TIMEOUT:-310}" python -m pytest -q --maxfail=5 -p no:cacheprovider tests/gpu tests/kernels/test_triton_attention.py tests/kernels/test_triton_sampling.py \
        tests/kernels/test_triton_layers.py tests/kernels/test_triton_skinny_gemm.py tests/kernels/test_triton_rejection.py \
        tests/kernels/test_triton_token_bitmask.py tests/kernels/test_triton_fused_moe.py \
        tests/kernels/test_triton_mla.py tests/kernels/test_triton_moe_routing.py tests/kernels/test_triton_fp8.py tests/kernels/test_triton_int4.py 2>&1 | grep -v "^20..-..-.. " | tail -40 | tee "$out/tests.txt"
fi
if [ "${BENCH:-1}" = 1 ]; then
    timeout 280 python benchmarks/gpu/bench_cuda.py --shapes $shapes --skip-hf --ab "${AB:-piecewise}" \
        --output-json "$out/bench.json" 2>&1 | grep -v "^20..-..-.. " | tail -40 | tee "$out/bench.txt"
fi
if [ "${CHECK:-0}" = 1 ]; then
    timeout 80 python benchmarks/gpu/check_cuda_path.py --shape llama3-8b --timeline --profile "$out/profile.txt" \
        2>&1 | grep -v "^pagedllm" | tail -40 | tee "$out/check.txt"
fi
if [ "${SPEC:-0}" = 1 ]; then
    timeout 400 python benchmarks/gpu/bench_spec_cuda.py --output-json "$out/spec.json" 2>&1 | grep -v "^20..-..-.. " \
        | tail -16 | tee "$out/spec.txt"
fi
