"""`pagedllm bench throughput`: offline throughput by vLLM's method.

N prompts of I random token ids, exactly O output tokens each (ignore_eos), all submitted at once.
"""
from __future__ import annotations

import argparse
import time

from pagedllm.bench.common import add_engine_args, engine_kwargs, random_prompts, spec_decoding_summary, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("throughput", help="offline throughput on random-token prompts")
    add_engine_args(p)
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--output-json", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict:
    from pagedllm import LLM, SamplingParams

    llm = LLM(args.model, **engine_kwargs(args))
    hf_config = llm.llm_engine.config.model_config.hf_config
    prompts = random_prompts(llm.get_tokenizer(), hf_config.vocab_size, args.num_prompts, args.input_len, args.seed)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.output_len, ignore_eos=True, seed=None)
    warm = SamplingParams(max_tokens=4, ignore_eos=True)
    llm.generate([{"prompt_token_ids": prompts[0]}], warm, use_tqdm=False)  # first-call allocations
    llm.llm_engine.step_times.reset()
    start = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    num_out = sum(len(o.outputs[0].token_ids) for o in outputs)
    num_in = sum(len(p) for p in prompts)
    result = {
        "elapsed_s": elapsed,
        "requests_per_s": len(prompts) / elapsed,
        "output_tokens_per_s": num_out / elapsed,
        "total_tokens_per_s": (num_in + num_out) / elapsed,
        "num_prompts": len(prompts), "input_len": args.input_len, "output_len": args.output_len,
        "step_times": llm.llm_engine.step_times.summary(),
        **spec_decoding_summary(llm),
    }
    print(f"Throughput: {result['requests_per_s']:.2f} requests/s, {result['total_tokens_per_s']:.1f} total tokens/s, "
          f"{result['output_tokens_per_s']:.1f} output tokens/s ({elapsed:.1f} s)")
    print("Per step (ms):", {k: round(v, 3) for k, v in result["step_times"].items()})
    if "spec_decoding" in result:
        print("Speculative decoding:", result["spec_decoding"])
    write_json(args.output_json, result)
    return result
