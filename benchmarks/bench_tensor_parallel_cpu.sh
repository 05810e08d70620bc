#!/usr/bin/env bash
# Tensor parallelism on this host's CPU (issue 23): the Qwen3-0.6B shape (16 heads, 8 KV heads; the
# default model's 9 heads do not split in two) with random float32 weights, one rank in the engine's
# process (uni, every core), one rank in a worker process (mp), and two ranks (mp, the cores split).
# Usage: bash benchmarks/bench_tensor_parallel_cpu.sh [OUT_DIR]
set -euo pipefail
out=${1:-/tmp/tp-bench}
mkdir -p "$out"
model="$out/qwen3-0.6b"
python -c "from pagedllm.bench.model_folders import QWEN3_0_6B, write_model_folder; write_model_folder('$model', QWEN3_0_6B)"
common=(--model "$model" --load-format dummy --max-model-len 512 --kv-cache-memory $((256 << 20)))
for variant in "uni 1" "mp 1" "mp 2"; do
  set -- $variant
  name="$1-tp$2"
  pagedllm bench latency "${common[@]}" --distributed-executor-backend "$1" --tensor-parallel-size "$2" \
    --batch-size 1 --input-len 16 --output-len 32 --num-iters 3 --output-json "$out/latency-$name.json" \
    2>&1 | grep -E "^(Avg|P50|Mean|latency)" || true
  pagedllm bench throughput "${common[@]}" --distributed-executor-backend "$1" --tensor-parallel-size "$2" \
    --num-prompts 16 --input-len 64 --output-len 32 --output-json "$out/throughput-$name.json" \
    2>&1 | grep -E "^Throughput" || true
done
python - "$out" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    with open(path) as f:
        data = json.load(f)
    keep = {k: v for k, v in data.items() if isinstance(v, (int, float))}
    print(os.path.basename(path), json.dumps(keep))
PY
