#!/usr/bin/env bash
# One sitting on the CPU machine, nothing else running: a before/after A/B of this tree against
# BASE, a copy of an earlier commit beside it (`mkdir .ab_base && git archive C | tar -x -C .ab_base`).
# Each tree runs its own `pagedllm bench` (python -m from its folder, its C++ kernels built into its
# own extensions folder first), the two alternating for ROUNDS rounds: throughput 64 x 128 in /
# 128 out and latency 1 x 32 in / 128 out, float32, the default model.
# Usage: [ROUNDS=2] bash benchmarks/cpu_commit_ab.sh OUT BASE
set -u
out=${1:?output folder}
base=${2:?baseline tree}
mkdir -p "$out"
here=$(pwd)
run() {  # tree label args...
    local tree=$1 label=$2
    shift 2
    (cd "$tree" && TORCH_EXTENSIONS_DIR="/tmp/pagedllm-ab-ext/$label" python -m pagedllm.cli.main bench "$@")
}
for label in base new; do  # build each tree's kernels before anything is timed
    tree=$base; [ $label = new ] && tree=$here
    run "$tree" $label latency --dtype float32 --input-len 8 --output-len 2 --num-iters 1 >/dev/null 2>&1
done
for round in $(seq "${ROUNDS:-2}"); do
    for label in base new; do
        tree=$base; [ $label = new ] && tree=$here
        echo "== round $round, $label ($tree)" | tee -a "$out/ab.txt"
        run "$tree" $label throughput --dtype float32 --num-prompts 64 --input-len 128 --output-len 128 \
            --output-json "$out/tput_${label}_$round.json" 2>&1 | grep -iE "tok/s|throughput" | tail -2 | tee -a "$out/ab.txt"
        run "$tree" $label latency --dtype float32 --batch-size 1 --input-len 32 --output-len 128 \
            --output-json "$out/lat_${label}_$round.json" 2>&1 | grep -iE "ms|latency" | tail -2 | tee -a "$out/ab.txt"
    done
done
