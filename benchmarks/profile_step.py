"""Where a decode step's time goes: GEMMs, attention, norms/rotary/activation, sampling, Python.

Runs N requests to their decode phase, then times K decode steps with module hooks (CPU ops are
synchronous, so wall time per module is its cost) and wrappers around input preparation and the
sampler. Also reports scheduler + input-preparation time per step. Nothing here is on the hot path.

    python benchmarks/profile_step.py --batch-sizes 1,64,256 --steps 10

With --whole-run N: instead, seconds per category over a whole `bench throughput` run of N
prompts (prefill and decode, the engine's default limits), as the CPU results quote them:

    python benchmarks/profile_step.py --whole-run 64 --input-len 128 --output-len 128
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

from pagedllm import LLM, SamplingParams
from pagedllm.bench.common import random_prompts
from pagedllm.layers.attention import Attention
from pagedllm.layers.linear import Linear
from pagedllm.worker import model_runner as runner_module

from call_timers import wrap_timed  # this folder: run as python benchmarks/profile_step.py

CATEGORIES = ("gemm", "attention", "other_layers", "logits", "sampler", "prepare_inputs", "schedule+update",
              "output_processing")


class Timers:
    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.enabled = False

    def add(self, name: str, seconds: float) -> None:
        if self.enabled:
            self.totals[name] += seconds


def instrument(llm: LLM, timers: Timers) -> None:
    runner = llm.llm_engine.executor.worker.runner
    starts: dict[int, float] = {}

    def pre(module, args):
        starts[id(module)] = time.perf_counter()

    def post_for(name):
        def post(module, args, out):
            timers.add(name, time.perf_counter() - starts.pop(id(module)))
        return post

    for name, module in runner.model.named_modules():
        if isinstance(module, Attention):
            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post_for("attention"))

    def wrap(obj, attr, name):
        wrap_timed(obj, attr, lambda seconds: timers.add(name, seconds))

    for name, module in runner.model.named_modules():
        if isinstance(module, Linear) and not name.endswith("lm_head"):
            # Every entry, not a forward hook: the layers call accumulate_ (the residual added in
            # the GEMM's store) and forward_gated directly.
            for attr in ("forward", "forward_add", "forward_gated", "accumulate_"):
                if hasattr(module, attr):
                    wrap(module, attr, "gemm")

    wrap(runner_module, "build_model_input", "prepare_inputs")
    wrap(runner_module, "make_sampling_metadata", "prepare_inputs")
    wrap(runner.sampler, "launch", "sampler")  # the runner queues sampling through launch()
    wrap(runner.model, "compute_logits", "logits")
    wrap(runner.model, "forward", "model_forward")
    engine = llm.llm_engine
    wrap(engine.scheduler, "schedule", "schedule+update")
    wrap(engine.scheduler, "update_from_output", "schedule+update")
    wrap(engine.output_processor, "process_outputs", "output_processing")
    wrap(engine, "step", "step")


def profile(llm: LLM, timers: Timers, batch_size: int, steps: int, input_len: int,
            temperature: float) -> dict[str, float]:
    timers.totals.clear()
    engine = llm.llm_engine
    vocab = engine.config.model_config.hf_config.vocab_size
    prompts = random_prompts(llm.get_tokenizer(), vocab, batch_size, input_len, seed=batch_size)
    params = SamplingParams(temperature=temperature, max_tokens=steps + 8, ignore_eos=True)
    for i, p in enumerate(prompts):
        engine.add_request(f"p{batch_size}-{i}", {"prompt_token_ids": p}, params)
    while any(r.num_computed_tokens < r.num_prompt_tokens for r in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()
    engine.step()
    timers.enabled = True
    for _ in range(steps):
        engine.step()
    timers.enabled = False
    while engine.has_unfinished_requests():
        engine.step()
    per_step = {k: 1e3 * v / steps for k, v in timers.totals.items()}
    forward = per_step.pop("model_forward", 0.0)
    per_step["other_layers"] = forward - per_step.get("gemm", 0.0) - per_step.get("attention", 0.0)
    step = per_step.pop("step", 0.0)
    accounted = sum(per_step.get(c, 0.0) for c in CATEGORIES)
    per_step["python_rest"] = step - accounted
    per_step["step_total"] = step
    return per_step


def profile_whole_run(llm: LLM, timers: Timers, num_prompts: int, input_len: int, output_len: int,
                      temperature: float) -> dict[str, float]:
    """Seconds per category over one generate() of `num_prompts` random prompts (ignore_eos)."""
    vocab = llm.llm_engine.config.model_config.hf_config.vocab_size
    prompts = random_prompts(llm.get_tokenizer(), vocab, num_prompts, input_len, seed=0)
    llm.generate([{"prompt_token_ids": prompts[0]}], SamplingParams(max_tokens=4, ignore_eos=True),
                 use_tqdm=False)  # first-call allocations, as bench throughput does
    timers.totals.clear()
    timers.enabled = True
    start = time.perf_counter()
    llm.generate([{"prompt_token_ids": p} for p in prompts],
                 SamplingParams(temperature=temperature, max_tokens=output_len, ignore_eos=True), use_tqdm=False)
    wall = time.perf_counter() - start
    timers.enabled = False
    totals = dict(timers.totals)
    forward = totals.pop("model_forward", 0.0)
    totals["other_layers"] = forward - totals.get("gemm", 0.0) - totals.get("attention", 0.0)
    totals.pop("step", None)
    totals["rest"] = wall - sum(totals.get(c, 0.0) for c in CATEGORIES)
    totals["wall"] = wall
    return totals


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--quantization", default=None, choices=["gguf", "none"], help="default: a GGUF's own types")
    ap.add_argument("--batch-sizes", default="1,64,256")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--whole-run", type=int, default=0, metavar="N", help="profile a whole run of N prompts")
    ap.add_argument("--output-len", type=int, default=128, help="with --whole-run")
    args = ap.parse_args()
    if args.whole_run:
        llm = LLM(args.model, dtype=args.dtype, quantization=args.quantization)
        timers = Timers()
        instrument(llm, timers)
        totals = profile_whole_run(llm, timers, args.whole_run, args.input_len, args.output_len, args.temperature)
        print(f"whole run, {args.whole_run} x {args.input_len} in x {args.output_len} out, seconds ({args.dtype}, quantization {args.quantization or 'default'})")
        for c in list(CATEGORIES) + ["rest", "wall"]:
            print(f"{c:<20}{totals.get(c, 0.0):>10.3f}")
        print(f"{args.whole_run * args.output_len / totals['wall']:.1f} output tok/s (hooks included)")
        return
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    llm = LLM(args.model, dtype=args.dtype, quantization=args.quantization, max_num_seqs=max(sizes), max_num_batched_tokens=8192,
              enable_prefix_caching=False)
    timers = Timers()
    instrument(llm, timers)
    rows = {b: profile(llm, timers, b, args.steps, args.input_len, args.temperature) for b in sizes}
    cols = list(CATEGORIES) + ["python_rest", "step_total"]
    print(f"decode step, ms per step ({args.dtype}, quantization {args.quantization or 'default'})")
    print(f"{'category':<20}" + "".join(f"{'batch ' + str(b):>12}" for b in sizes))
    for c in cols:
        print(f"{c:<20}" + "".join(f"{rows[b].get(c, 0.0):>12.3f}" for b in sizes))


if __name__ == "__main__":
    main()
