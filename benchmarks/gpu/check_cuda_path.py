"""Smoke check of the CUDA path on a model shape with random weights: start-up (load, profile,
graph capture), then a batch-1 decode and a batch-64 decode, with per-step CPU vs GPU time.

    python benchmarks/gpu/check_cuda_path.py [--shape qwen3-0.6b|llama3-8b] [--enforce-eager]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.gpu.model_folders import LLAMA3_8B, QWEN3_0_6B, write_model_folder  # noqa: E402

SHAPES = {"qwen3-0.6b": QWEN3_0_6B, "llama3-8b": LLAMA3_8B}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="qwen3-0.6b", choices=sorted(SHAPES))
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--max-model-len", type=int, default=4096)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    import torch

    from pagedllm import LLM, SamplingParams

    folder = write_model_folder(tempfile.mkdtemp(), SHAPES[args.shape])
    start = time.perf_counter()
    llm = LLM(folder, load_format="dummy", max_model_len=args.max_model_len, enforce_eager=args.enforce_eager)
    worker = llm.llm_engine.executor.worker
    print(f"start-up {time.perf_counter() - start:.1f} s: {worker.startup_times}, blocks {llm.llm_engine.num_blocks}, "
          f"backend {worker.backend.name}")
    for batch in (1, 64):
        prompts = [{"prompt_token_ids": [100 + (7 * i + j) % 5000 for j in range(128)]} for i in range(batch)]
        params = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
        llm.generate(prompts, params, use_tqdm=False)  # warm-up
        llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache()
        llm.llm_engine.step_times.__init__()
        torch.cuda.synchronize()
        t = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - t
        st = llm.llm_engine.step_times.summary()
        print(f"batch {batch}: {1e3 * elapsed / 128:.2f} ms per step, {batch * 128 / elapsed:.0f} out tok/s; "
              f"per step ms: " + ", ".join(f"{k} {v:.3f}" for k, v in st.items()))
    runner = worker.runner
    if runner.graphs is not None:
        print(f"graph replays {runner.graphs.num_replays}, pool {runner.graphs.pool_bytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
