"""Structured outputs' cost on the default model: 64 concurrent requests each constrained by a JSON
schema (8 distinct schemas, new to the engine in the first round) against the very same requests
unconstrained (each run from an empty prefix cache), and the first token's
latency of a request whose schema is new, cached, or absent.

Throughput: the constrained run goes first; each unconstrained request then generates exactly as
many tokens as its constrained twin did (ignore_eos, max_tokens = that count), so the two runs do
the same model work and the ratio of their tokens/s is the constraint's cost (matchers, masks,
synchronous stepping). First token: one request alone, through the engine's steps, timed from
add_request to its first token; a "new" schema is one the engine has never compiled.

    python benchmarks/bench_structured_outputs.py --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from pagedllm import LLM, SamplingParams
from pagedllm.sampling_params import RequestOutputKind, StructuredOutputsParams

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMAS = os.path.join(HERE, "..", "tests", "data", "json_schemas.json")


def _chat(llm: LLM, text: str) -> str:
    return llm.get_tokenizer().apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                   add_generation_prompt=True)


def _throughput(llm: LLM, schemas: list[dict[str, Any]], num_requests: int) -> tuple[float, float, int]:
    """(constrained tok/s, unconstrained tok/s, output tokens) for num_requests requests."""
    subjects = ["a person", "a city", "a film", "a product", "a book", "a song", "a team", "a planet"]
    prompts, constrained = [], []
    for i in range(num_requests):
        schema = schemas[i % len(schemas)]
        prompts.append(_chat(llm, f"Describe {subjects[i // len(schemas) % len(subjects)]} as JSON following "
                                  f"{json.dumps(schema)}"))
        constrained.append(SamplingParams(temperature=0.0, max_tokens=160,
                                          structured_outputs=StructuredOutputsParams(json=schema)))
    reset = llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache  # both runs prefill alike
    reset()
    start = time.perf_counter()
    outs = llm.generate(prompts, constrained, use_tqdm=False)
    t_constrained = time.perf_counter() - start
    counts = [len(o.outputs[0].token_ids) for o in outs]
    plain = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in counts]
    reset()
    start = time.perf_counter()
    llm.generate(prompts, plain, use_tqdm=False)
    t_plain = time.perf_counter() - start
    total = sum(counts)
    return total / t_constrained, total / t_plain, total


def _first_token_s(llm: LLM, prompt: str, structured: StructuredOutputsParams | None) -> float:
    engine = llm.llm_engine
    params = SamplingParams(temperature=0.0, max_tokens=4, structured_outputs=structured,
                            output_kind=RequestOutputKind.DELTA)
    request_id = f"ttft-{time.perf_counter_ns()}"
    engine.scheduler.kv_cache_manager.reset_prefix_cache()  # each one prefills its prompt
    start = time.perf_counter()
    engine.add_request(request_id, prompt, params)
    first = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            if first is None and out.outputs[0].token_ids:
                first = time.perf_counter() - start
    assert first is not None
    return first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-requests", type=int, default=64)
    args = parser.parse_args()
    with open(SCHEMAS) as f:
        all_schemas = json.load(f)
    llm = LLM(kv_cache_memory=1 << 30)
    schemas = all_schemas[:8]
    llm.generate([_chat(llm, "warm up")], SamplingParams(max_tokens=2, structured_outputs=StructuredOutputsParams(
        json=all_schemas[19])), use_tqdm=False)  # builds the compiler (the tokenizer's vocabulary) once
    ratios, ttft = [], {"none": [], "new schema": [], "cached schema": []}
    prompt = _chat(llm, "Describe a person as JSON.")
    for r in range(args.rounds):
        con, plain, total = _throughput(llm, schemas, args.num_requests)
        ratios.append(con / plain)
        print(f"round {r}: constrained {con:.1f} tok/s, unconstrained {plain:.1f} tok/s ({total} tokens): "
              f"{con / plain:.3f}x", flush=True)
        fresh = {**all_schemas[10 + r], "title": f"fresh-{time.time_ns()}"}  # never compiled before
        ttft["none"].append(_first_token_s(llm, prompt, None))
        ttft["new schema"].append(_first_token_s(llm, prompt, StructuredOutputsParams(json=fresh)))
        ttft["cached schema"].append(_first_token_s(llm, prompt, StructuredOutputsParams(json=fresh)))
    print(f"throughput constrained / unconstrained: median {statistics.median(ratios):.3f}x "
          f"(rounds {', '.join(f'{x:.3f}' for x in ratios)})")
    for name, values in ttft.items():
        print(f"first token, {name}: median {1e3 * statistics.median(values):.1f} ms "
              f"({', '.join(f'{1e3 * v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
