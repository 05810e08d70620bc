"""`pagedllm bench latency`: time to generate one batch end to end, and per output token."""
from __future__ import annotations

import argparse
import time

import numpy as np

from pagedllm.bench.common import add_engine_args, engine_kwargs, random_prompts, spec_decoding_summary, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="latency of one batch of requests")
    add_engine_args(p)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--input-len", type=int, default=32)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--num-iters-warmup", type=int, default=1)
    p.add_argument("--num-iters", type=int, default=3)
    p.add_argument("--output-json", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict:
    from pagedllm import LLM, SamplingParams

    llm = LLM(args.model, **engine_kwargs(args))
    hf_config = llm.llm_engine.config.model_config.hf_config
    prompts = [{"prompt_token_ids": p} for p in
               random_prompts(llm.get_tokenizer(), hf_config.vocab_size, args.batch_size, args.input_len, args.seed)]
    params = SamplingParams(temperature=1.0, max_tokens=args.output_len, ignore_eos=True)
    for _ in range(args.num_iters_warmup):
        llm.generate(prompts, params, use_tqdm=False)
    llm.llm_engine.step_times.reset()
    latencies = []
    for _ in range(args.num_iters):
        # Different prompts each time would defeat nothing here; prefix caching is reset so every
        # iteration computes its prompt.
        llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache()
        start = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        latencies.append(time.perf_counter() - start)
    lat = np.array(latencies)
    result = {
        "avg_latency_s": float(lat.mean()),
        "percentiles_s": {str(p): float(np.percentile(lat, p)) for p in (10, 50, 90, 99)},
        "ms_per_output_token": float(1e3 * lat.mean() / args.output_len),
        "batch_size": args.batch_size, "input_len": args.input_len, "output_len": args.output_len,
        "step_times": llm.llm_engine.step_times.summary(),
        **spec_decoding_summary(llm),
    }
    print(f"Avg latency: {result['avg_latency_s']:.3f} s; {result['ms_per_output_token']:.2f} ms per output token "
          f"(batch {args.batch_size}, {args.input_len} in, {args.output_len} out)")
    print("Per step (ms):", {k: round(v, 3) for k, v in result["step_times"].items()})
    if "spec_decoding" in result:
        print("Speculative decoding:", result["spec_decoding"])
    write_json(args.output_json, result)
    return result
