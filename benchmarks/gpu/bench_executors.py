"""The multiprocess executor's cost on one GPU (issue 23): the Llama-3-8B shape (random bf16
weights) through `uni` (the worker in the engine's process) and `mp` (the worker in its own
process, TP=1), one engine after the other in this call: batch-1 ms per output token (128 in / 128
out) and throughput (N x 512 in / 128 out). Also says whether two ranks can share the one GPU.

    python benchmarks/gpu/bench_executors.py [--num-prompts 1000] [--output-json OUT]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch

from benchmarks.gpu.bench_cuda import bench_latency, bench_throughput
from pagedllm.bench.model_folders import LLAMA3_8B, write_model_folder


def main() -> None:
    from pagedllm import LLM

    parser = argparse.ArgumentParser()
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args()
    folder = write_model_folder(tempfile.mkdtemp(prefix="llama3-8b"), LLAMA3_8B)
    vocab = LLAMA3_8B["vocab_size"]
    results: dict[str, dict] = {}
    for backend in ("uni", "mp", "uni"):  # uni twice: the first run's spread is the noise
        name = backend if backend not in results else backend + "-again"
        start = time.perf_counter()
        llm = LLM(folder, load_format="dummy", max_model_len=4096, distributed_executor_backend=backend)
        startup = time.perf_counter() - start
        lat = bench_latency(llm, vocab, 128, 128)
        tput = bench_throughput(llm, vocab, args.num_prompts, 512, 128)
        results[name] = {"startup_s": startup, "ms_per_output_token": lat["ms_per_output_token"],
                         "decode_step_ms": lat["decode_step_ms"], "total_tok_s": tput["total_tok_s"]}
        print(f"[{name}] start-up {startup:.1f} s; {lat['ms_per_output_token']:.3f} ms/token (decode step "
              f"{lat['decode_step_ms']:.3f} ms); throughput {tput['total_tok_s']:.0f} tok/s", flush=True)
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        torch.cuda.empty_cache()
    base = results["uni"]
    for name, r in results.items():
        print(f"{name}: {r['ms_per_output_token'] / base['ms_per_output_token']:.3f}x latency, "
              f"{r['total_tok_s'] / base['total_tok_s']:.3f}x throughput of uni")
    try:  # two ranks on this one GPU: NCCL refuses a communicator with the device twice
        LLM(folder, load_format="dummy", max_model_len=1024, tensor_parallel_size=2, enforce_eager=True)
        results["two_ranks_one_gpu"] = {"ran": True}
    except Exception as e:
        results["two_ranks_one_gpu"] = {"ran": False, "error": f"{type(e).__name__}: {e}"}
    print("two ranks on one GPU:", results["two_ranks_one_gpu"], flush=True)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
