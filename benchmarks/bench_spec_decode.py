"""Speculative decoding on the CPU at batch 1: tokens/s with each method against none, the methods
interleaved prompt by prompt (same sitting). Each round builds its engines afresh: suffix decoding
keeps recent outputs to draw from, and a repeat of the same prompts would find their answers there.

Two prompt sets:
- copy: answers that copy from the prompt (editing, extraction, code rewriting;
  benchmarks/data/spec_decode_prompts.json), greedy, chat template, up to --max-tokens;
- no-hit: random-token prompts answered by seeded sampling at temperature 1, where drafts are
  rarely right for fixed-token drafts (n-gram, suffix): what speculation costs when it does not
  help. Seeded sampling gives the same tokens with and without those, so the methods generate the
  very same text; a draft model's sampled drafts go through the rejection rule instead, whose
  tokens follow the same distribution but are not the same draws (the script notes it).

    python benchmarks/bench_spec_decode.py --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from pagedllm import LLM, SamplingParams

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "ngram": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 5},
    "ngram8": {"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_min": 2, "prompt_lookup_max": 5},
    "ngram8m3": {"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_min": 3, "prompt_lookup_max": 6},
    "suffix": {"method": "suffix"},
    # the default GGUF's own quantized types drafting (run the target with --quantization none)
    "draft": {"method": "draft_model", "model": "", "num_speculative_tokens": 4},
}


def _copy_prompts(llm: LLM) -> list[list[int]]:
    with open(os.path.join(HERE, "data", "spec_decode_prompts.json")) as f:
        texts = json.load(f)["copy"]
    tok = llm.get_tokenizer()
    chats = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
             for t in texts]
    return [list(tok(c, add_special_tokens=False).input_ids) for c in chats]


def _random_prompts(llm: LLM, n: int, length: int) -> list[list[int]]:
    from pagedllm.bench.common import random_prompts

    return random_prompts(llm.get_tokenizer(), llm.llm_engine.config.model_config.hf_config.vocab_size, n, length, 0)


def _run_interleaved(engines: dict[str, LLM], prompts: list[list[int]],
                     params: list[SamplingParams]) -> dict[str, tuple[float, int, list[list[int]]]]:
    """Each prompt alone (batch 1) on each engine in turn, prompt by prompt, so that the machine's
    drifting speed (it is shared) weighs on every method alike: per method, seconds, output
    tokens and the outputs."""
    seconds = dict.fromkeys(engines, 0.0)
    outputs: dict[str, list[list[int]]] = {m: [] for m in engines}
    for p, q in zip(prompts, params):
        for method, llm in engines.items():
            start = time.perf_counter()
            out = llm.generate([{"prompt_token_ids": p}], q, use_tqdm=False)[0].outputs[0].token_ids
            seconds[method] += time.perf_counter() - start
            outputs[method].append(out)
    return {m: (seconds[m], sum(len(o) for o in outputs[m]), outputs[m]) for m in engines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--quantization", default=None, choices=["gguf", "none"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--sets", nargs="+", default=["copy", "no-hit"], choices=["copy", "no-hit"])
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args()
    def config(method: str) -> dict[str, Any] | None:
        spec = METHODS[method]
        if spec is not None and spec.get("model") == "":
            from pagedllm.models.source import default_model_file

            spec = {**spec, "model": default_model_file()}
        return spec

    def make_engines() -> dict[str, LLM]:
        engines = {m: LLM(args.model, quantization=args.quantization, speculative_config=config(m),
                          max_model_len=2048, kv_cache_memory=512 << 20) for m in args.methods}
        for llm in engines.values():
            llm.generate(warm, SamplingParams(max_tokens=8), use_tqdm=False)
        return engines

    probe = LLM(args.model, quantization=args.quantization, max_model_len=2048, kv_cache_memory=64 << 20)
    all_sets = {
        "copy": (_copy_prompts(probe), None),
        "no-hit": (_random_prompts(probe, 8, 64), 1.0),
    }
    sets = {name: all_sets[name] for name in args.sets}
    warm = [{"prompt_token_ids": _random_prompts(probe, 1, 16)[0]}]
    del probe
    results: dict[str, dict[str, list[float]]] = {s: {m: [] for m in args.methods} for s in sets}
    reference: dict[str, list[list[int]]] = {}
    acceptance: dict[str, list[Any]] = {m: [] for m in args.methods}
    for r in range(args.rounds):
        engines = make_engines()
        for set_name, (prompts, temperature) in sets.items():
            params = [SamplingParams(temperature=temperature or 0.0, seed=i if temperature else None,
                                     max_tokens=args.max_tokens) for i in range(len(prompts))]
            for method, (seconds, tokens, outputs) in _run_interleaved(engines, prompts, params).items():
                if reference.setdefault(set_name, outputs) != outputs:
                    print(f"  note: {method} generated other tokens than the first method on {set_name}")
                results[set_name][method].append(tokens / seconds)
                print(f"round {r} {set_name:7s} {method:7s} {tokens:5d} tokens {seconds:6.2f} s "
                      f"{tokens / seconds:7.1f} tok/s", flush=True)
        for method, llm in engines.items():
            acceptance[method].append(llm.llm_engine.engine_core.make_stats().spec_decoding)
        del engines
    summary: dict[str, Any] = {}
    for set_name, per_method in results.items():
        base = statistics.median(per_method["none"]) if "none" in per_method else None
        for method, values in per_method.items():
            median = statistics.median(values)
            ratio = f" = {median / base:.2f}x none" if base else ""
            print(f"{set_name:7s} {method:7s} median {median:7.1f} tok/s{ratio}")
            summary.setdefault(set_name, {})[method] = {"tok_s": values, "median": median}
    for method, per_round in acceptance.items():
        spec = per_round[-1]  # the last round's (both prompt sets)
        if spec is not None:
            print(f"{method}: acceptance {spec.acceptance_rate:.2f}, mean accepted length "
                  f"{spec.mean_acceptance_length:.2f}, per position "
                  f"{[round(x, 2) for x in spec.per_position_acceptance()[:8]]}")
            summary.setdefault("acceptance", {})[method] = {
                "rate": spec.acceptance_rate, "mean_length": spec.mean_acceptance_length}
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
