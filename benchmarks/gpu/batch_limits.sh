#!/usr/bin/env bash
# One device call: throughput (1000 x 512/128) at larger scheduler limits than the defaults
# (max_num_seqs 256, a 2048-token budget), with HF generate measured for the small shape.
# Usage: bash benchmarks/gpu/batch_limits.sh OUT
set -u
out=${1:?output folder}
mkdir -p "$out"
run() {  # name, then bench_cuda.py arguments
    local name=$1
    shift
    echo "== $name" | tee -a "$out/limits.txt"
    timeout 280 python benchmarks/gpu/bench_cuda.py --ab none "$@" 2>&1 | grep -E "^\[|^[a-z0-9.-]+ \|" | tee -a "$out/limits.txt"
}
run "0.6B 256 seqs, 2048 tokens" --shapes qwen3-0.6b --skip-hf --max-num-seqs 256 --max-num-batched-tokens 2048
run "0.6B 512 seqs, 4096 tokens" --shapes qwen3-0.6b --skip-hf --max-num-seqs 512 --max-num-batched-tokens 4096
run "0.6B 512 seqs, 8192 tokens, with HF" --shapes qwen3-0.6b --max-num-seqs 512 --max-num-batched-tokens 8192 \
    --hf-batch-sizes 128 256 512 --hf-budget-s 60
run "8B 512 seqs, 4096 tokens" --shapes llama3-8b --skip-hf --max-num-seqs 512 --max-num-batched-tokens 4096
