#!/usr/bin/env bash
# One device call for issue 22 (< 600 s): the quantized GPU tests and kernel tests, the quantized
# linear methods per projection (bench_quant_gemm.py), then the Llama-3-8B shape end to end: bf16
# against fp8 (and more variants if given) on their own engines in the same call.
# Usage: bash benchmarks/gpu/quant_session.sh OUT [variant ...]   (default variants: none fp8 awq)
set -u
out=${1:?output folder}
shift
variants=${*:-none fp8 awq}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
timeout 110 python -m pytest -q --maxfail=5 -p no:cacheprovider tests/gpu/test_quantized_gpu.py \
    tests/kernels/test_triton_fp8.py tests/kernels/test_triton_int4.py tests/kernels/test_triton_fused_moe.py \
    -s 2>&1 | grep -E "passed|failed|Error|error|agree|fp8|int4|awq|gptq|FAIL" \
    | grep -v "^20..-..-.. " | tail -30 | tee "$out/tests.txt"
timeout 80 python benchmarks/gpu/bench_quant_gemm.py --rows 1 16 64 512 4096 2>&1 | grep -v "^20..-..-.. " \
    | tail -30 | tee "$out/gemm.txt"
timeout 390 python benchmarks/gpu/bench_cuda.py --shapes llama3-8b --skip-hf --ab none --quantizations $variants \
    --output-json "$out/bench.json" 2>&1 | grep -v "^20..-..-.. " | tail -30 | tee "$out/bench.txt"
