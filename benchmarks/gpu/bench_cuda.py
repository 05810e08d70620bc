"""The CUDA path against the card's rooflines and HF transformers, in one run (< 10 minutes).

For each model shape (Llama-3-8B, Qwen3-0.6B; random bf16 weights built in place):
  start-up    load + memory profile + CUDA-graph capture
  latency     batch 1, 128 in / 128 out: ms per output token vs the HBM roofline
              (weights + KV read per step over the measured copy bandwidth)
  throughput  1000 x 512 in / 128 out: total tok/s vs the bf16 compute roofline
              (2 FLOPs per matmul weight per token) and vs HF generate() at its best batch size
  overhead    a decode step's wall time vs the GPU time of its forward + logits (graph replay)
  A/B         latency and throughput again on the same engine with one feature off (--ab:
              the piecewise graphs of prompt steps by default, or asynchronous scheduling)

    python benchmarks/gpu/bench_cuda.py [--shapes llama3-8b qwen3-0.6b] [--num-prompts 1000] [--skip-hf]
Prints one table last; --output-json writes every number.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.gpu.ceilings import (Ceilings, back_to_back_ms, compute_roofline_tokens_per_s,  # noqa: E402
                                     decode_step_roofline_s, measure_ceilings, model_counts)
from benchmarks.gpu.hf_baseline import hf_generate_throughput  # noqa: E402
from pagedllm.bench.model_folders import (  # noqa: E402
    DEEPSEEK_V2_LITE,
    LLAMA3_8B,
    QWEN3_0_6B,
    QWEN3_30B_A3B,
    write_model_folder,
)

SHAPES = {"llama3-8b": LLAMA3_8B, "qwen3-0.6b": QWEN3_0_6B, "qwen3-30b-a3b": QWEN3_30B_A3B,
          "deepseek-v2-lite": DEEPSEEK_V2_LITE}


def _prompts(vocab_size: int, num: int, length: int, seed: int) -> list[dict[str, list[int]]]:
    rng = np.random.default_rng(seed)
    return [{"prompt_token_ids": rng.integers(3, vocab_size, length).tolist()} for _ in range(num)]


def _timed_generate(llm: Any, prompts: list, params: Any) -> float:
    llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache()
    torch.cuda.synchronize()
    start = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    return time.perf_counter() - start


def bench_latency(llm: Any, vocab_size: int, input_len: int, output_len: int, iters: int = 3) -> dict[str, float]:
    """End-to-end ms per output token (vLLM's bench latency), and the decode step alone: the
    difference between output_len tokens and 1 token, over output_len - 1 steps."""
    from pagedllm import SamplingParams

    prompts = _prompts(vocab_size, 1, input_len, 0)
    full = SamplingParams(temperature=1.0, max_tokens=output_len, ignore_eos=True)
    one = SamplingParams(temperature=1.0, max_tokens=1, ignore_eos=True)
    _timed_generate(llm, prompts, full)  # warm-up
    llm.llm_engine.step_times.__init__()
    e2e = float(np.median([_timed_generate(llm, prompts, full) for _ in range(iters)]))
    steps = llm.llm_engine.step_times.summary()
    first = float(np.median([_timed_generate(llm, prompts, one) for _ in range(iters)]))
    return {"e2e_s": e2e, "ms_per_output_token": 1e3 * e2e / output_len,
            "decode_step_ms": 1e3 * (e2e - first) / (output_len - 1), "prefill_and_first_ms": 1e3 * first,
            **{f"step_{k}": v for k, v in steps.items()}}


def gpu_step_ms(llm: Any, batch: int = 1, iters: int = 50) -> float | None:
    """GPU time of a decode step's forward (graph replay) + logits + argmax at `batch`, timed with
    CUDA events: what a step would take with no host work at all."""
    runner = llm.llm_engine.executor.worker.runner
    if runner.graphs is None:
        return None
    size = runner.graphs.padded_size(batch)
    model = runner.model

    def step() -> None:
        hidden = runner.graphs.replay(size)
        model.compute_logits(hidden[:batch]).argmax(-1)

    with torch.inference_mode():
        return back_to_back_ms(step, iters)


def bench_throughput(llm: Any, vocab_size: int, num_prompts: int, input_len: int, output_len: int) -> dict:
    from pagedllm import SamplingParams

    prompts = _prompts(vocab_size, num_prompts, input_len, 1)
    params = SamplingParams(temperature=1.0, max_tokens=output_len, ignore_eos=True)
    # Warm-up on the same shapes of steps (mixed prefill + decode at full batch): Triton compiles a
    # kernel variant per new specialisation of its integer arguments, seconds each, and the first
    # timed run would pay for them (the Qwen3-0.6B A/B read 53k async vs 62k sync that way).
    _timed_generate(llm, prompts[:300], SamplingParams(max_tokens=8, ignore_eos=True))
    llm.llm_engine.step_times.__init__()
    elapsed = _timed_generate(llm, prompts, params)
    total = num_prompts * (input_len + output_len)
    return {"elapsed_s": elapsed, "total_tok_s": total / elapsed, "output_tok_s": num_prompts * output_len / elapsed,
            **{f"step_{k}": v for k, v in llm.llm_engine.step_times.summary().items()}}


@torch.inference_mode()
def check_attention_backends(llm: Any) -> float:
    """Relative error of the model's hidden states with the engine's backend against the torch
    reference backend, on a mixed prefill batch (chunks of 1..300 tokens) over fresh caches."""
    from pagedllm.attention.forward_context import ForwardContext, set_forward_context
    from pagedllm.attention.torch_ref import TorchAttentionBackend
    from pagedllm.worker.kv_cache import KVCacheSpec, allocate_kv_caches
    from pagedllm.worker.memory import dummy_prefill

    worker = llm.llm_engine.executor.worker
    cfg = llm.llm_engine.config
    spec = KVCacheSpec.from_configs(cfg.model_config, cfg.cache_config)
    lens = [1, 17, 300, 64, 1, 129]
    metadata, ids, positions = dummy_prefill(lens, spec.block_size, cfg.model_config.hf_config.vocab_size, "cuda")
    outs = []
    for backend in (worker.backend, TorchAttentionBackend()):
        caches = allocate_kv_caches(spec, sum(-(-n // spec.block_size) for n in lens), backend, torch.device("cuda"))
        metadata.backend_cache.clear()
        with set_forward_context(ForwardContext(metadata, caches, backend)):
            outs.append(worker.model(ids, positions).float())
    return float((outs[0] - outs[1]).norm() / outs[1].norm())


@contextlib.contextmanager
def _without(llm: Any, feature: str) -> Iterator[None]:
    """The loaded engine with `feature` off: asynchronous scheduling, or the piecewise graphs
    (steps with prompt tokens then run eagerly)."""
    if feature == "async":
        core = llm.llm_engine.engine_core
        core.set_async_scheduling(False)
        try:
            yield
        finally:
            core.set_async_scheduling(True)
    else:
        runner = llm.llm_engine.executor.worker.runner
        piecewise, runner.piecewise = runner.piecewise, None
        try:
            yield
        finally:
            runner.piecewise = piecewise


@dataclass(frozen=True)
class Variant:
    """One engine of a shape (--quantizations): its weights and KV cache."""

    llm_kwargs: dict[str, Any]
    layer_weight_bytes: float | None = None  # bytes per decoder weight in the floor (None: bf16)
    kv_bytes: int = 2  # bytes per cached K/V value
    checkpoint_config: dict[str, Any] | None = None  # a quantized checkpoint's config (random packed weights)


# int4 is half a byte plus a bf16 scale and zero per group of 128 inputs; the LM head stays bf16
VARIANTS = {
    "none": Variant({}),
    "fp8": Variant({"quantization": "fp8"}, layer_weight_bytes=1.0),  # a bf16 checkpoint quantized at load
    "awq": Variant({}, layer_weight_bytes=0.5 + 4 / 128, checkpoint_config={
        "quant_method": "awq", "version": "gemm", "bits": 4, "group_size": 128, "zero_point": True}),
    "kv-fp8": Variant({"kv_cache_dtype": "fp8"}, kv_bytes=1),  # bf16 weights, fp8 KV cache
}


def bench_shape(name: str, args: argparse.Namespace, ceilings: Ceilings, variant: str = "none") -> dict[str, Any]:
    from pagedllm import LLM

    var = VARIANTS[variant]
    shape = SHAPES[name.partition("/")[0]]
    if var.checkpoint_config is not None:
        shape = {**shape, "quantization_config": var.checkpoint_config}
    folder = write_model_folder(tempfile.mkdtemp(prefix=name.replace("/", "-")), shape)
    start = time.perf_counter()
    llm = LLM(folder, load_format="dummy", max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
              max_num_batched_tokens=args.max_num_batched_tokens, enforce_eager=args.enforce_eager,
              **var.llm_kwargs)
    worker = llm.llm_engine.executor.worker
    out: dict[str, Any] = {"startup_s": time.perf_counter() - start, "startup_stages_s": dict(worker.startup_times),
                           "num_blocks": llm.llm_engine.num_blocks, "backend": worker.backend.name}
    out["backend_rel_err"] = check_attention_backends(llm)
    vocab = shape["vocab_size"]
    counts = model_counts(llm.llm_engine.config.model_config.hf_config, layer_weight_bytes=var.layer_weight_bytes,
                          kv_bytes=var.kv_bytes)
    out["latency"] = lat = bench_latency(llm, vocab, 128, 128)
    core = llm.llm_engine.engine_core
    if args.ab != "none":  # the same engine without the feature, for the A/B
        with _without(llm, args.ab):
            out["latency_without"] = bench_latency(llm, vocab, 128, 128)
    out["gpu_step_ms_b1"] = gpu_step_ms(llm, 1)
    floor_s = decode_step_roofline_s(counts, 1, 128 + 64, ceilings)
    out["hbm_roofline_ms"] = 1e3 * floor_s
    out["hbm_fraction_e2e"] = 1e3 * floor_s / lat["ms_per_output_token"]
    out["hbm_fraction_decode"] = 1e3 * floor_s / lat["decode_step_ms"]
    print(f"[{name}] start-up {out['startup_s']:.1f} s {out['startup_stages_s']}; latency {lat['ms_per_output_token']:.2f} "
          f"ms/token (decode step {lat['decode_step_ms']:.2f} ms, GPU {out['gpu_step_ms_b1']}, roofline "
          f"{out['hbm_roofline_ms']:.2f} ms)", flush=True)
    print(f"[{name}] prefill + first token {lat['prefill_and_first_ms']:.2f} ms", flush=True)
    if "latency_without" in out:
        off = out["latency_without"]
        print(f"[{name}] without {args.ab}: {off['ms_per_output_token']:.2f} ms/token (decode step "
              f"{off['decode_step_ms']:.2f} ms, prefill + first token {off['prefill_and_first_ms']:.2f} ms), "
              f"{100e3 * floor_s / off['ms_per_output_token']:.0f}% of the roofline vs "
              f"{100 * out['hbm_fraction_e2e']:.0f}% with it", flush=True)
    if args.skip_throughput:
        return out
    out["throughput"] = tp = bench_throughput(llm, vocab, args.num_prompts, 512, 128)
    if args.ab != "none":
        with _without(llm, args.ab):
            out["throughput_without"] = bench_throughput(llm, vocab, args.num_prompts, 512, 128)
        print(f"[{name}] throughput without {args.ab} {out['throughput_without']['total_tok_s']:.0f} tok/s",
              flush=True)
    if args.long_context:
        out["long_context"] = lc = bench_throughput(llm, vocab, 16, 7000, 128)
        print(f"[{name}] long context 16 x 7000 / 128: {lc['total_tok_s']:.0f} tok/s ({lc['elapsed_s']:.1f} s)",
              flush=True)
    out["compute_roofline_tok_s"] = compute_roofline_tokens_per_s(counts, ceilings)
    out["compute_fraction"] = tp["total_tok_s"] / out["compute_roofline_tok_s"]
    print(f"[{name}] throughput {tp['total_tok_s']:.0f} tok/s ({tp['elapsed_s']:.1f} s), "
          f"{100 * out['compute_fraction']:.0f}% of the bf16 roofline", flush=True)
    del llm, worker, core  # the engine (its KV cache) must go before HF loads its copy
    gc.collect()
    torch.cuda.empty_cache()
    if not args.skip_hf:
        out["hf_tok_s"] = hf = hf_generate_throughput(folder, args.hf_batch_sizes, 512, 128, args.hf_budget_s)
        best = max(hf.values()) if hf else float("nan")
        out["hf_best_tok_s"], out["vs_hf"] = best, tp["total_tok_s"] / best
        print(f"[{name}] HF generate tok/s by batch {({b: round(v) for b, v in hf.items()})}", flush=True)
    return out


def print_table(ceilings: Ceilings, results: dict[str, dict[str, Any]]) -> None:
    print(f"\ncard: {torch.cuda.get_device_name()}; copy {ceilings.copy_bytes_per_s / 1e12:.2f} TB/s, "
          f"bf16 GEMM {ceilings.bf16_flops_per_s / 1e12:.0f} TFLOP/s")
    header = ("model", "attn err", "start-up s", "ms/tok b1", "decode ms", "GPU ms", "HBM floor", "HBM %", "tput tok/s",
              "roof %", "HF best", "vs HF")
    print(" | ".join(header))
    for name, r in results.items():
        lat, tp = r["latency"], r.get("throughput", {"total_tok_s": float("nan")})
        gpu = r["gpu_step_ms_b1"]
        row = (name, f"{r['backend_rel_err']:.1e}", f"{r['startup_s']:.1f}", f"{lat['ms_per_output_token']:.2f}", f"{lat['decode_step_ms']:.2f}",
               f"{gpu:.2f}" if gpu else "-", f"{r['hbm_roofline_ms']:.2f}",
               f"{100 * r['hbm_fraction_e2e']:.0f} / {100 * r['hbm_fraction_decode']:.0f}",
               f"{tp['total_tok_s']:.0f}", f"{100 * r.get('compute_fraction', float('nan')):.0f}",
               f"{r.get('hf_best_tok_s', float('nan')):.0f}", f"{r.get('vs_hf', float('nan')):.1f}x")
        print(" | ".join(row))
    print("(attn err = |h - h_ref| / |h_ref| of the hidden states, engine backend vs torch reference, bf16; "
          "HBM % = floor / measured: end-to-end per output token / decode step alone; roof % = total tok/s over "
          "the bf16 roofline of 2 FLOPs per matmul weight per token)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="+", default=["llama3-8b", "qwen3-0.6b"], choices=sorted(SHAPES))
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-num-seqs", type=int, default=None, help="the engine's default if unset")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None, help="the engine's default if unset")
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true", help="start-up and batch-1 latency only")
    parser.add_argument("--ab", default="piecewise", choices=["none", "async", "piecewise"],
                        help="also measure the same engine with this feature off")
    parser.add_argument("--hf-batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--hf-budget-s", type=float, default=60.0)
    parser.add_argument("--quantizations", nargs="+", default=["none"], choices=sorted(VARIANTS),
                        help="each shape once per entry, on its own engine: random bf16 weights as they are "
                             "(none), quantized at load (fp8), random 4-bit AWQ weights (awq), or bf16 weights "
                             "with an fp8 KV cache (kv-fp8); the first is the baseline of the others")
    parser.add_argument("--long-context", action="store_true",
                        help="also 16 x 7000 in / 128 out (needs --max-model-len 8192)")
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ceilings = measure_ceilings()
    results = {}
    for name in args.shapes:
        for variant in args.quantizations:
            key = name if variant == "none" else f"{name}/{variant}"
            results[key] = bench_shape(key, args, ceilings, variant)
            gc.collect()
            torch.cuda.empty_cache()
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"card": torch.cuda.get_device_name(), "ceilings": ceilings.__dict__, "results": results}, f,
                      indent=2, default=str)
    print_table(ceilings, results)


if __name__ == "__main__":
    main()
