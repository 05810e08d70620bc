"""Speculative decoding on CUDA, Llama-3-8B shape (random bf16 weights), against no speculation on
the same card in the same run.

The mechanism's cost is measured with forced acceptance (`"rejection_sample_method": "synthetic"`):
random weights draft nothing useful, so drafts come from a proposer that costs nothing (the
request's last token, k times; registered here as method "repeat") and each is accepted with the
asked probability:

  self       k = 4, every draft accepted, batch 1: what the target as its own draft would give
             with a free draft (ms per token, target <= 0.3x no speculation)
  a=0.7      k = 4, each draft accepted with probability 0.7 once the ones before it were,
             batch 1 (target <= 0.55x)
  b64 a=0.5  k = 4, conditional acceptance 0.5, batch 64 (target: no slower)
  draft      a draft model of the Llama-3.2-1B shape (same vocabulary) proposing k = 4 for real,
             acceptance forced to 0.7, batch 1: what drafting with a model costs
  eagle3     an EAGLE-3 head of the 8B shape (draft vocabulary 32000) proposing k = 4 for real,
             acceptance forced to 0.7, batch 1

    python benchmarks/gpu/bench_spec_cuda.py [--output-len 256] [--skip-draft]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np
import torch

from pagedllm.bench.model_folders import LLAMA3_8B, write_model_folder
from pagedllm.spec_decode.config import PROPOSERS
from pagedllm.spec_decode.proposer import DraftRequest, Proposer

K = 4
LLAMA3_2_1B: dict[str, Any] = {**LLAMA3_8B, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                               "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                               "tie_word_embeddings": True}
TINY: dict[str, Any] = {**LLAMA3_8B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512}


def _eagle3_head_folder(target: dict[str, Any]) -> str:
    """An EAGLE-3 head's config for the target's shape (random weights: load_format dummy)."""
    folder = tempfile.mkdtemp(prefix="eagle3")
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size",
            "max_position_embeddings", "rms_norm_eps", "rope_theta", "bos_token_id", "eos_token_id")
    config = {k: target[k] for k in keys if k in target}
    config.update(architectures=["LlamaForCausalLMEagle3"], model_type="llama", num_hidden_layers=1,
                  draft_vocab_size=min(32000, target["vocab_size"]))
    if target["num_hidden_layers"] < 6:
        config["eagle_aux_hidden_state_layer_ids"] = [0, 1, 1]
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return folder


class RepeatProposer(Proposer):
    """The request's last token, num_speculative_tokens times: drafts that cost nothing."""

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        return [[int(r.token_ids[-1])] * self.num_speculative_tokens for r in requests]


def _synthetic(rate: float, method: str = "repeat", k: int = K, **extra: Any) -> dict[str, Any]:
    return {"method": method, "num_speculative_tokens": k, "rejection_sample_method": "synthetic",
            "synthetic_acceptance_rates": [rate ** j for j in range(1, k + 1)], **extra}


def _set_rate(llm: Any, rate: float) -> None:
    """The engine's forced conditional acceptance, changed between runs (one engine, no rebuild)."""
    verifier = llm.llm_engine.executor.worker.runner.speculator.verifier
    verifier.synthetic.rates = np.full(K, rate)


def _without_verify_graphs(llm: Any, name: str, report: Any, *run_args: Any) -> None:
    """The same run with the verify steps in pieces instead of whole graphs (an A/B on one engine)."""
    runner = llm.llm_engine.executor.worker.runner
    graphs, runner.verify_graphs = runner.verify_graphs, None
    try:
        report(f"{name} pw", _run(llm, *run_args[:-1]), run_args[-1])
    finally:
        runner.verify_graphs = graphs


def _run(llm: Any, batch: int, input_len: int, output_len: int, iters: int) -> dict[str, float]:
    from pagedllm import SamplingParams

    rng = np.random.default_rng(batch)
    vocab = llm.llm_engine.config.model_config.hf_config.vocab_size
    prompts = [{"prompt_token_ids": rng.integers(3, vocab, input_len).tolist()} for _ in range(batch)]
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)  # warm-up
    core = llm.llm_engine.engine_core
    before = core.make_stats().spec_decoding
    times = []
    for _ in range(iters):
        llm.llm_engine.scheduler.kv_cache_manager.reset_prefix_cache()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    out = {"s": seconds, "ms_per_token": 1e3 * seconds / output_len, "tok_s": batch * output_len / seconds}
    after = core.make_stats().spec_decoding
    if after is not None:
        delta = after.since(before) if before is not None else after
        out["mean_acceptance_length"] = delta.mean_acceptance_length
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--skip-draft", action="store_true")
    parser.add_argument("--skip-eagle", action="store_true")
    parser.add_argument("--b64-k", type=int, nargs="*", default=[],
                        help="also batch 64 at acceptance 0.5 with these smaller k (an engine each)")
    parser.add_argument("--tiny", action="store_true", help="a tiny shape (checks the script on the CPU)")
    parser.add_argument("--profile", action="store_true", help="cProfile the host during the batch-64 run")
    parser.add_argument("--output-json")
    args = parser.parse_args()
    from pagedllm import LLM

    PROPOSERS.register("repeat", f"{__name__}:RepeatProposer" if __name__ != "__main__"
                       else "benchmarks.gpu.bench_spec_cuda:RepeatProposer")
    target = write_model_folder(tempfile.mkdtemp(prefix="llama3-8b"), TINY if args.tiny else LLAMA3_8B)
    common = dict(load_format="dummy", max_model_len=1024, max_num_seqs=64, kv_cache_memory=8 << 30)
    if args.tiny:
        common = dict(load_format="dummy", max_model_len=1024, max_num_seqs=64, kv_cache_memory=64 << 20)
    il, ol, it = args.input_len, args.output_len, args.iters
    results: dict[str, Any] = {"card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}

    def report(name: str, r: dict[str, float], base: dict[str, float] | None = None) -> None:
        results[name] = r
        ratio = f", {r['ms_per_token'] / base['ms_per_token']:.3f}x no speculation" if base else ""
        mal = f", mean acceptance length {r['mean_acceptance_length']:.2f}" if "mean_acceptance_length" in r else ""
        print(f"{name:<12} {r['ms_per_token']:8.3f} ms/token {r['tok_s']:9.0f} tok/s{ratio}{mal}", flush=True)

    plain = LLM(target, **common)
    spec = LLM(target, speculative_config=_synthetic(1.0), **common)
    base1 = _run(plain, 1, il, ol, it)
    report("none b1", base1)
    report("self b1", _run(spec, 1, il, ol, it), base1)
    _without_verify_graphs(spec, "self b1", report, 1, il, ol, it, base1)
    _set_rate(spec, 0.7)
    report("a=0.7 b1", _run(spec, 1, il, ol, it), base1)
    base64 = _run(plain, 64, il, ol, 1)
    report("none b64", base64)
    _set_rate(spec, 0.5)
    report("a=0.5 b64", _run(spec, 64, il, ol, 1), base64)
    _without_verify_graphs(spec, "a=0.5 b64", report, 64, il, ol, 1, base64)
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.enable()
        _run(spec, 64, il, ol, 1)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    del spec
    for k in args.b64_k:
        small = LLM(target, speculative_config=_synthetic(0.5, k=k), **common)
        report(f"k={k} a=0.5 b64", _run(small, 64, il, ol, 1), base64)
        del small
    if not args.skip_draft:
        draft = write_model_folder(tempfile.mkdtemp(prefix="llama3.2-1b"), TINY if args.tiny else LLAMA3_2_1B)
        with_draft = LLM(target, speculative_config=_synthetic(0.7, "draft_model", model=draft), **common)
        report("draft a=0.7 b1", _run(with_draft, 1, il, ol, it), base1)
        _without_verify_graphs(with_draft, "draft a=0.7 b1", report, 1, il, ol, it, base1)
    if not args.skip_eagle:
        head = _eagle3_head_folder(TINY if args.tiny else LLAMA3_8B)
        with_head = LLM(target, speculative_config=_synthetic(0.7, "eagle3", model=head), **common)
        report("eagle3 a=0.7 b1", _run(with_head, 1, il, ol, it), base1)
        _without_verify_graphs(with_head, "eagle3 a=0.7 b1", report, 1, il, ol, it, base1)
        del with_head
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
