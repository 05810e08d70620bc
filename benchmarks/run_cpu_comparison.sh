#!/usr/bin/env bash
# One sitting on the CPU machine: pagedllm's own benchmarks, then the reference engines on the same
# workloads (../shared/peers: vLLM's CPU build and HF transformers generate). Only ratios measured in
# the same sitting mean anything on these shared machines.
#   bash ../shared/peers/setup.sh            # once: vLLM CPU build + the default model as a HF folder
#   bash benchmarks/run_cpu_comparison.sh [peers]   # "peers" also runs vLLM and HF
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/pagedllm-bench}; mkdir -p "$out"
peers=../shared/peers
pagedllm bench throughput --dtype float32 --quantization none --num-prompts 64 --input-len 128 --output-len 128 \
  --output-json "$out/pagedllm_tput_64x128x128.json"
pagedllm bench throughput --dtype float32 --quantization none --num-prompts 256 --input-len 64 --output-len 64 \
  --output-json "$out/pagedllm_tput_256x64x64.json"
pagedllm bench latency --dtype float32 --quantization none --batch-size 1 --input-len 32 --output-len 128 \
  --output-json "$out/pagedllm_latency_1x32x128.json"
if [ "${1:-}" = "peers" ]; then
  # shellcheck disable=SC1091
  source /tmp/peers/vllm/bin/activate
  export VLLM_CPU_KVCACHE_SPACE=4 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0
  python "$peers/bench_throughput.py" --engine vllm --model /tmp/models/smollm2-135m-instruct \
    --workloads 1x32x128,64x128x128 --dtype float32 --repeats 2 --out "$out/vllm.jsonl"
  python "$peers/bench_throughput.py" --engine hf --model /tmp/models/smollm2-135m-instruct \
    --workloads 64x128x128 --dtype float32 --hf-batch-size 64 --repeats 1 --out "$out/hf.jsonl"
  python "$peers/bench_throughput.py" --engine hf --model /tmp/models/smollm2-135m-instruct \
    --workloads 1x32x128 --dtype float32 --hf-batch-size 1 --repeats 1 --out "$out/hf.jsonl"
fi
