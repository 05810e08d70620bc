#!/usr/bin/env bash
# Quantized GGUF weights on the CPU (issue 18), one sitting: pagedllm against llama.cpp on the same
# files (the default Q4_1, and Q4_K_M and Q8_0 files of the same model made by llama.cpp's own
# quantizer from the F32 copy), against pagedllm's float32 path, and against vLLM's CPU build on the
# float32 HF folder. Only ratios measured together mean anything on these shared machines.
#   bash ../shared/peers/setup.sh && bash ../shared/peers/setup.sh llamacpp   # once
#   bash benchmarks/run_quant_comparison.sh [rounds]
# LLAMACPP_PY picks the llama-cpp-python interpreter. On the Intel Xeon (Sapphire Rapids) VMs the
# native build's AMX matmul segfaults on any prompt of 32+ tokens (ggml_backend_amx_mul_mat); build
# one without AMX beside it (same flags as native otherwise) and point LLAMACPP_PY at it:
#   python3 -m venv /tmp/peers/llamacpp-noamx && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
#     -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON \
#     -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
#     /tmp/peers/llamacpp-noamx/bin/pip install --no-cache-dir llama-cpp-python==0.3.36 gguf numpy
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/pagedllm-quant}; mkdir -p "$out"
rounds=${1:-2}
peers=../shared/peers
models=/tmp/models/smollm2
llamacpp=${LLAMACPP_PY:-/tmp/peers/llamacpp/bin/python}
q4_1=$(python -c "from pagedllm.models.source import default_model_file as f; print(f())")
for ftype in Q4_K_M Q8_0; do
  [ -f "$models/SmolLM2-135M-Instruct.$ftype.gguf" ] || $llamacpp - "$ftype" <<'PY'
import ctypes, sys
import llama_cpp
ftype = sys.argv[1]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
params.nthread = 2
src = b"/tmp/models/smollm2/SmolLM2-135M-Instruct.F32.gguf"
dst = f"/tmp/models/smollm2/SmolLM2-135M-Instruct.{ftype}.gguf".encode()
sys.exit(llama_cpp.llama_model_quantize(src, dst, ctypes.byref(params)))
PY
done
files=("$q4_1" "$models/SmolLM2-135M-Instruct.Q4_K_M.gguf" "$models/SmolLM2-135M-Instruct.Q8_0.gguf")
for round in $(seq "$rounds"); do
  for f in "${files[@]}"; do  # batch 1, 32 in / 128 out, both engines on the same file, 2 threads
    name=$(basename "$f" .gguf)
    pagedllm bench latency --model "$f" --batch-size 1 --input-len 32 --output-len 128 --num-iters 3 \
      --log-level WARNING --output-json "$out/pagedllm_latency_${name}_r$round.json" | grep "ms per output"
    $llamacpp "$peers/bench_llamacpp.py" --model "$f" --input-len 32 --output-len 128 --threads 2 --repeats 3 \
      --out "$out/llamacpp.jsonl" | grep MEDIAN
  done
  pagedllm bench latency --quantization none --batch-size 1 --input-len 32 --output-len 128 --num-iters 3 \
    --log-level WARNING --output-json "$out/pagedllm_latency_f32_r$round.json" | grep "ms per output"
  for q in gguf none; do  # 64 x 128 in / 128 out: quantized, then float32
    pagedllm bench throughput --quantization "$q" --num-prompts 64 --input-len 128 --output-len 128 \
      --log-level WARNING --output-json "$out/pagedllm_tput_${q}_r$round.json" | grep Throughput
  done
done
# shellcheck disable=SC1091
source /tmp/peers/vllm/bin/activate
export VLLM_CPU_KVCACHE_SPACE=4 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0
python "$peers/bench_throughput.py" --engine vllm --model /tmp/models/smollm2-135m-instruct \
  --workloads 64x128x128 --dtype float32 --repeats 2 --out "$out/vllm.jsonl" 2>&1 | grep -iE "median|tok/s" | tail -3
