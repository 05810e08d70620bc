"""Where the host's time goes in eager (non-graph) steps on the GPU: cProfile over generate()
calls that are mostly prefill, on a model shape with random weights.

    python benchmarks/gpu/host_profile.py [--shape qwen3-0.6b|llama3-8b] [--top 40]
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pagedllm.bench.model_folders import LLAMA3_8B, QWEN3_0_6B, write_model_folder  # noqa: E402

SHAPES = {"qwen3-0.6b": QWEN3_0_6B, "llama3-8b": LLAMA3_8B}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="qwen3-0.6b", choices=sorted(SHAPES))
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    import torch

    from pagedllm import LLM, SamplingParams

    llm = LLM(write_model_folder(tempfile.mkdtemp(), SHAPES[args.shape]), load_format="dummy", max_model_len=4096)
    cases = {
        "1 x 128 prompt, 1 token": ([[100 + j for j in range(128)]], 1),
        "64 x 512 prompts, 2 tokens": ([[100 + (7 * i + j) % 5000 for j in range(512)] for i in range(64)], 2),
    }
    for name, (prompts, out_len) in cases.items():
        params = SamplingParams(temperature=1.0, max_tokens=out_len, ignore_eos=True)
        batch = [{"prompt_token_ids": p} for p in prompts]
        for _ in range(2):  # warm-up: Triton specialisations, allocator
            llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache()
            llm.generate(batch, params, use_tqdm=False)
        llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache()
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        start = time.perf_counter()
        prof.enable()
        for _ in range(3):
            llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache()
            llm.generate(batch, params, use_tqdm=False)
        prof.disable()
        print(f"== {name}: {1e3 * (time.perf_counter() - start) / 3:.1f} ms per generate (under cProfile)")
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
