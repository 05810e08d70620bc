#!/usr/bin/env bash
# The server on the GPU: Qwen3-0.6B shape with random bf16 weights, the official API over curl, then a
# serving sweep next to the offline engine on the same workload. Needs fastapi/uvicorn/pyzmq/msgspec
# (carry them as wheels on the device machine).   bash benchmarks/gpu/serve_smoke.sh OUT_DIR
set -euo pipefail
OUT=${1:-/tmp/serve-smoke}; PORT=${PORT:-8000}; mkdir -p "$OUT"
MODEL=/tmp/qwen3-0.6b-shape
python -c "from pagedllm.bench.model_folders import QWEN3_0_6B, write_model_folder; write_model_folder('$MODEL', QWEN3_0_6B)"
python -m pagedllm.cli.main --log-level INFO serve "$MODEL" --load-format dummy --served-model-name qwen3 \
  --chat-template "{% for m in messages %}{{ m['content'] }} {% endfor %}" --max-model-len 4096 --host 127.0.0.1 --port "$PORT" > "$OUT/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 240); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$PORT/health" > /dev/null || { tail -30 "$OUT/server.log"; exit 1; }
curl -s "http://127.0.0.1:$PORT/v1/completions" -H 'content-type: application/json' \
  -d '{"model": "qwen3", "prompt": [11, 12, 13, 14], "max_tokens": 8, "temperature": 0, "ignore_eos": true}'; echo
curl -sN "http://127.0.0.1:$PORT/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model": "qwen3", "messages": [{"role": "user", "content": "t5 t6"}], "max_tokens": 4, "stream": true}' | head -c 600 || true; echo
python -m pagedllm.bench.serve --port "$PORT" --vocab-size 151936 --num-prompts 500 --random-input-len 512 \
  --random-output-len 128 --request-rates 16,64,inf --disable-tqdm --result-file "$OUT/serve.json" | tail -n 7
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E "^pagedllm:(num_requests|kv_cache_usage|generation_tokens_total)"
kill $SERVER; wait $SERVER || true
grep -E "Memory:|Captured|KV cache:" "$OUT/server.log" | cut -c1-220
python -m pagedllm.cli.main bench throughput --model "$MODEL" --load-format dummy --max-model-len 4096 \
  --num-prompts 500 --input-len 512 --output-len 128 | tail -n 2
