"""Tensor and pipeline parallelism on the GPUs of one host (issues 23 and 24), one engine after the
other in this call, each with the model shape's random bf16 weights:

  latency     batch 1, 128 in / 128 out: ms per output token, against the HBM floor of the cards
              the weights are split over (tensor parallelism reads each card's share at once;
              pipeline stages run one after the other, so they read all the weights in turn)
  throughput  N x 512 in / 128 out, total tokens/s
  greedy      64 greedy tokens of 4 prompts, agreement with the first configuration's (bf16: rounding
              differs between splits, so tokens after a near-tie may differ)
  --kill      a TP=2 engine whose rank 1 is killed mid-run: seconds until the engine's error

    python benchmarks/gpu/bench_parallel.py --shape llama3-8b --configs uni:1x1 mp:1x1 mp:2x1 mp:1x2 [--kill]

A configuration is BACKEND:TPxPP. One GPU checks the mp executor's cost (uni:1x1 against mp:1x1).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np
import torch

from benchmarks.gpu.bench_cuda import bench_latency, bench_throughput
from benchmarks.gpu.ceilings import measure_ceilings, model_counts
from pagedllm.bench.model_folders import LLAMA3_8B, LLAMA3_70B, QWEN3_0_6B, write_model_folder

SHAPES = {"llama3-8b": LLAMA3_8B, "llama3-70b": LLAMA3_70B, "qwen3-0.6b": QWEN3_0_6B}


def _parse(config: str) -> tuple[str, int, int]:
    backend, _, sizes = config.partition(":")
    tp, _, pp = sizes.partition("x")
    return backend, int(tp), int(pp or 1)


def _greedy(llm: Any, vocab: int) -> list[list[int]]:
    from pagedllm import SamplingParams

    rng = np.random.default_rng(7)
    prompts = [{"prompt_token_ids": rng.integers(3, vocab, 32).tolist()} for _ in range(4)]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=64, ignore_eos=True), use_tqdm=False)
    return [o.outputs[0].token_ids for o in outs]


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean fraction of positions before the first difference."""
    firsts = [next((i for i, (x, y) in enumerate(zip(p, q)) if x != y), len(p)) / len(p) for p, q in zip(a, b)]
    return float(np.mean(firsts))


def _kill_check(folder: str) -> dict[str, Any]:
    from pagedllm import LLM, SamplingParams

    llm = LLM(folder, load_format="dummy", max_model_len=1024, tensor_parallel_size=2)
    engine = llm.llm_engine
    engine.add_request("r", {"prompt_token_ids": [5, 6, 7]}, SamplingParams(max_tokens=2000, ignore_eos=True))
    for _ in range(20):
        engine.step()
    os.kill(engine.executor.workers[1].proc.pid, signal.SIGKILL)
    start = time.perf_counter()
    try:
        while engine.has_unfinished_requests():
            engine.step()
        return {"error": None, "seconds": time.perf_counter() - start}
    except Exception as e:  # reported, whatever it is
        return {"error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - start}


def main() -> None:
    from pagedllm import LLM

    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    parser.add_argument("--configs", nargs="+", default=["uni:1x1", "mp:1x1"])
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--kill", action="store_true", help="also time a killed rank's error (needs 2 GPUs)")
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    folder = write_model_folder(tempfile.mkdtemp(prefix=args.shape), shape)
    ceilings = measure_ceilings()
    results: dict[str, Any] = {"card": torch.cuda.get_device_name(), "cards": torch.cuda.device_count(),
                               "copy_tb_s": ceilings.copy_bytes_per_s / 1e12}
    baseline: list[list[int]] | None = None
    for config in args.configs:
        backend, tp, pp = _parse(config)
        start = time.perf_counter()
        llm = LLM(folder, load_format="dummy", max_model_len=args.max_model_len, tensor_parallel_size=tp,
                  pipeline_parallel_size=pp, distributed_executor_backend=backend)
        out: dict[str, Any] = {"startup_s": time.perf_counter() - start}
        counts = model_counts(llm.llm_engine.config.model_config.hf_config)
        # tensor parallelism reads each card's share at once; pipeline stages read theirs in turn
        floor_s = (counts.weight_bytes() + 192 * counts.kv_bytes_per_token) / tp / ceilings.copy_bytes_per_s
        lat = bench_latency(llm, shape["vocab_size"], 128, 128)
        out.update(ms_per_output_token=lat["ms_per_output_token"], decode_step_ms=lat["decode_step_ms"],
                   hbm_floor_ms=1e3 * floor_s, hbm_fraction=1e3 * floor_s / lat["ms_per_output_token"])
        greedy = _greedy(llm, shape["vocab_size"])
        baseline = baseline or greedy
        out["greedy_agreement"] = _agreement(greedy, baseline)
        if not args.skip_throughput:
            out["total_tok_s"] = bench_throughput(llm, shape["vocab_size"], args.num_prompts, 512, 128)["total_tok_s"]
        results[config] = out
        print(f"[{args.shape} {config}] start-up {out['startup_s']:.1f} s; {out['ms_per_output_token']:.3f} ms/token "
              f"(decode step {out['decode_step_ms']:.3f} ms, floor {out['hbm_floor_ms']:.3f} ms, "
              f"{100 * out['hbm_fraction']:.0f}%); greedy agreement {out['greedy_agreement']:.2f}; "
              f"throughput {out.get('total_tok_s', float('nan')):.0f} tok/s", flush=True)
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        torch.cuda.empty_cache()
    first = results[args.configs[0]]
    for config in args.configs[1:]:
        r = results[config]
        print(f"{config} vs {args.configs[0]}: {first['ms_per_output_token'] / r['ms_per_output_token']:.3f}x "
              f"faster batch 1, {r.get('total_tok_s', float('nan')) / first.get('total_tok_s', float('nan')):.3f}x "
              "throughput")
    if args.kill:
        results["kill"] = _kill_check(folder)
        print("killed rank 1:", results["kill"], flush=True)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
