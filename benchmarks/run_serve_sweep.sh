#!/usr/bin/env bash
# Serving sweep on this machine with the default model, plus the two baselines of the same sitting:
# the offline engine on the same workload, and the server with its engine core in a thread.
#   bash benchmarks/run_serve_sweep.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-/tmp/pagedllm-serve-sweep}
PORT=${PORT:-8031}
NUM=${NUM_PROMPTS:-64}; IN=${INPUT_LEN:-128}; OUTLEN=${OUTPUT_LEN:-128}
RATES=${RATES:-1,2,4,8,inf}
mkdir -p "$OUT"

serve() {  # serve [extra flags...]: start the server, wait for /health
  pagedllm serve --host 127.0.0.1 --port "$PORT" --dtype float32 --disable-log-stats "$@" > "$OUT/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && return 0
    kill -0 $SERVER 2> /dev/null || { cat "$OUT/server.log"; exit 1; }
    sleep 1
  done
  echo "server did not start"; exit 1
}
cpu() {  # CPU seconds used so far by the server process and by its engine-core child
  echo "cpu seconds: api-server $(ps -o times= -p $SERVER)" \
       "engine-core $(ps -o times= --ppid $SERVER | sort -n | tail -n 1)"
}
stop() { cpu; kill $SERVER; wait $SERVER || true; }
bench() {  # bench NAME RATES SEED
  pagedllm bench serve --port "$PORT" --vocab-size 49152 --num-prompts "$NUM" --random-input-len "$IN" \
    --random-output-len "$OUTLEN" --request-rates "$2" --seed "$3" --disable-tqdm --result-file "$OUT/$1.json" \
    | tail -n 8
}

uptime
serve
bench process "$RATES" 1
stop

serve --engine-core-in-thread
bench thread inf 2
stop

# With one engine thread a core is left for the server process: the split shows when there is room.
PAGEDLLM_CPU_THREADS=1 serve
bench process-1thread inf 3
stop
PAGEDLLM_CPU_THREADS=1 serve --engine-core-in-thread
bench thread-1thread inf 4
stop

pagedllm bench throughput --num-prompts "$NUM" --input-len "$IN" --output-len "$OUTLEN" --dtype float32 \
  --output-json "$OUT/offline.json" | tail -n 3
uptime
