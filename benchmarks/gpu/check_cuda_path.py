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

from benchmarks.call_timers import wrap_timed  # noqa: E402
from pagedllm.bench.model_folders import LLAMA3_8B, QWEN3_0_6B, write_model_folder  # noqa: E402

SHAPES = {"qwen3-0.6b": QWEN3_0_6B, "llama3-8b": LLAMA3_8B}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="qwen3-0.6b", choices=sorted(SHAPES))
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--profile", default=None, help="write torch.profiler tables of a few steps here")
    parser.add_argument("--timeline", action="store_true", help="host time per stage of a batch-1 decode step")
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
    if args.timeline:
        host_timeline(llm)
    if args.profile:
        profile_steps(llm, args.profile)
    runner = worker.runner
    if runner.graphs is not None:
        pieces = runner.piecewise.num_replays if runner.piecewise is not None else 0
        print(f"graph replays: decode {runner.graphs.num_replays}, piecewise {pieces}; graphs hold "
              f"{worker.graph_pool_bytes / 2**20:.0f} MiB")


def host_timeline(llm, steps: int = 64) -> None:
    """Host milliseconds per batch-1 decode step in each stage, mean / median / max (no syncs
    added, so the stage that waits for the GPU is the sampler's read of the tokens); once as is,
    once with the start-up objects frozen out of Python's garbage collector. Each stage's wrapper
    costs ~1 us of host time per call."""
    import collections
    import gc
    import statistics

    import pagedllm.worker.model_runner as runner_module
    from pagedllm import SamplingParams

    calls: dict[str, list[float]] = collections.defaultdict(list)

    def wrap(obj, attr: str, name: str) -> None:
        wrap_timed(obj, attr, calls[name].append)

    engine = llm.llm_engine
    runner = engine.executor.worker.runner
    wrap(runner, "_update_states", "runner: update states")
    wrap(runner_module, "build_model_input", "runner: build inputs + upload")
    if runner.graphs is not None:
        wrap(runner.graphs, "replay", "runner: graph launch")
    wrap(runner.model, "compute_logits", "runner: logits launch")
    wrap(runner_module, "make_sampling_metadata", "runner: sampling metadata")
    wrap(runner.sampler, "launch", "runner: sampler launch")
    # the read of a step's tokens: where the host waits for the GPU (with async scheduling, for
    # the step launched before the one just queued)
    wrap(runner_module.RunnerStep, "result", "runner: read step result")
    wrap(engine.scheduler, "schedule", "core: schedule")
    wrap(engine.scheduler, "update_from_output", "core: update")
    wrap(engine.output_processor, "process_outputs", "frontend: outputs")
    wrap(engine, "step", "engine step (wall)")
    params = SamplingParams(temperature=1.0, max_tokens=steps, ignore_eos=True)
    for label in ("as is", "gc.freeze()"):
        if label == "gc.freeze()":
            gc.collect()
            gc.freeze()
        for times in calls.values():  # in place: each wrapper holds its own list's append
            times.clear()
        llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache()
        llm.generate([{"prompt_token_ids": list(range(100, 228))}], params, use_tqdm=False)
        print(f"  host ms per step ({label}): mean / median / max")
        for name, times in sorted(calls.items()):
            print(f"    {name:40s} {1e3 * sum(times) / steps:7.3f} {1e3 * statistics.median(times):7.3f} "
                  f"{1e3 * max(times):7.3f}")


def profile_steps(llm, path: str) -> None:
    """torch.profiler over a batch-1 decode and a mixed batch (64 prompts of 512 tokens): where the
    host and the GPU spend each step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from pagedllm import SamplingParams

    cases = {"decode_b1": ([[100 + j for j in range(128)]], 16),
             "mixed_64x512": ([[100 + (7 * i + j) % 5000 for j in range(512)] for i in range(64)], 4)}
    with open(path, "w") as f:
        for name, (prompts, out_len) in cases.items():
            params = SamplingParams(temperature=1.0, max_tokens=out_len, ignore_eos=True)
            llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
                torch.cuda.synchronize()
            for key in ("self_cpu_time_total", "self_cuda_time_total"):
                f.write(f"== {name} by {key}\n")
                f.write(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60) + "\n")


if __name__ == "__main__":
    main()
