"""Shared pieces of the offline benchmarks: engine flags, random-token prompts, JSON results."""
from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np


def random_prompts(tokenizer: Any, vocab_size: int, num_prompts: int, input_len: int, seed: int) -> list[list[int]]:
    """vLLM's method: prompts of uniformly random token ids, avoiding special tokens."""
    rng = np.random.default_rng(seed)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    allowed = np.array([t for t in range(vocab_size) if t not in special], dtype=np.int64)
    return [rng.choice(allowed, size=input_len).tolist() for _ in range(num_prompts)]


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="HF folder, .gguf file or Hub id ORG/NAME (default: "
                        "embedded SmolLM2-135M)")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=None,
                        help="default: the platform's (256; 512 on GPUs of 70 GiB or more)")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--prefix-caching-hash-algo", default="sha256", choices=["sha256", "builtin"],
                        help="sha256 resists crafted collisions between users' prefixes; builtin is faster")
    parser.add_argument("--num-gpu-blocks-override", type=int, default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--kv-cache-memory", type=int, default=None, help="KV cache size in bytes")
    parser.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "bfloat16", "float32", "fp8", "fp8_e4m3"],
                        help="the KV cache's element type: auto (the model's dtype; bfloat16 for a GGUF file's "
                             "quantized weights on the CPU), bfloat16 (on the CPU also under a float32 model: half "
                             "the bytes a decode step reads), float32, or fp8 (CUDA: e4m3, twice the tokens)")
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--cuda-graph-mode", default="full_and_piecewise",
                        choices=["full_and_piecewise", "full_decode_only"],
                        help="CUDA: graphs of the whole forward for decode steps, and of the pieces between "
                             "attention calls for steps with prompt tokens (or those eager)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                        help="schedule and prepare the next step while the device runs the current one "
                             "(default: on for CUDA, off on the CPU, where it cannot overlap)")
    parser.add_argument("--load-format", default="auto", choices=["auto", "dummy"],
                        help="dummy: random weights of the model's shape (benchmarks without a checkpoint)")
    parser.add_argument("--quantization", default=None,
                        choices=["awq", "awq_marlin", "compressed-tensors", "fp8", "gguf", "gptq", "gptq_marlin",
                                 "none"],
                        help="default: the checkpoint's own format (its quantization_config; a GGUF file's "
                             "types run as stored by the CPU kernels). fp8: an FP8 checkpoint, or a bf16 one "
                             "quantized at load; awq, gptq: 4-bit checkpoints; gguf: a GGUF file's types, "
                             "explicitly; none: a GGUF file dequantized at load to --dtype")
    parser.add_argument("--speculative-config", default=None, metavar="JSON",
                        help='speculative decoding, vLLM\'s JSON, e.g. \'{"method": "ngram", '
                             '"num_speculative_tokens": 4}\'; methods: ngram, suffix, draft_model, eagle, eagle3')
    parser.add_argument("--reasoning-parser", default=None, metavar="NAME",
                        help="a reasoning model's thinking: qwen3 (<think>...</think> when the model thinks) or "
                             "deepseek_r1 (thinking until </think>); structured outputs then constrain the "
                             "answer only, and the server puts the thinking in reasoning_content")
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1,
                        help="ranks that split every layer of the model (one device each on CUDA; on the CPU "
                             "processes that share the host's cores)")
    parser.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1,
                        help="stages the decoder layers are split into, each on its own ranks (their memory "
                             "split; the stages do not overlap in time yet)")
    parser.add_argument("--distributed-executor-backend", default=None, choices=["uni", "mp", "ray"],
                        help="how the ranks' workers run: uni (one rank, in the engine's process), mp (a "
                             "process per rank on this host) or ray (actors on a Ray cluster's hosts); default: "
                             "uni for one rank; for more, ray when RAY_ADDRESS is set, else mp")
    add_kernel_args(parser)
    from pagedllm.engine.vllm_compat import add_vllm_compat_args

    add_vllm_compat_args(parser)


def add_kernel_args(parser: argparse.ArgumentParser) -> None:
    """A flag per KernelConfig field (--attention-backend, --cpu-gemm, --triton/--no-triton, ...),
    default None: the environment's PAGEDLLM_<NAME>, else the config's default."""
    import dataclasses
    import typing

    from pagedllm.config import KernelConfig

    group = parser.add_argument_group("kernel choices (README, \"Kernel choices\")")
    hints = typing.get_type_hints(KernelConfig)
    for f in dataclasses.fields(KernelConfig):
        flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"] + f" (default: {f.default})"
        if hints[f.name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif hints[f.name] == int | None:
            group.add_argument(flag, type=int, default=None, help=help_text)
        else:
            group.add_argument(flag, default=None, choices=f.metadata["choices"], help=help_text)


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from pagedllm.engine.vllm_compat import vllm_compat_kwargs

    return dict(
        tokenizer=args.tokenizer, dtype=args.dtype, seed=args.seed, max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size, enable_prefix_caching=args.enable_prefix_caching,
        prefix_caching_hash_algo=args.prefix_caching_hash_algo,
        num_gpu_blocks_override=args.num_gpu_blocks_override,
        gpu_memory_utilization=args.gpu_memory_utilization, kv_cache_memory=args.kv_cache_memory,
        kv_cache_dtype=args.kv_cache_dtype,
        enforce_eager=args.enforce_eager, device=args.device, load_format=args.load_format,
        async_scheduling=args.async_scheduling, cuda_graph_mode=args.cuda_graph_mode,
        quantization=args.quantization, speculative_config=args.speculative_config,
        reasoning_parser=args.reasoning_parser, tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        distributed_executor_backend=args.distributed_executor_backend,
        **{name: getattr(args, name) for name in _kernel_arg_names()},
        **vllm_compat_kwargs(args),
        **({"generation_config": args.generation_config} if hasattr(args, "generation_config") else {}),
    )


def _kernel_arg_names() -> list[str]:
    import dataclasses

    from pagedllm.config import KernelConfig

    return [f.name for f in dataclasses.fields(KernelConfig)]


def spec_decoding_summary(llm: Any) -> dict[str, Any]:
    """{"spec_decoding": acceptance so far} for an engine with speculative decoding, else {}."""
    stats = llm.llm_engine.engine_core.make_stats().spec_decoding
    if stats is None:
        return {}
    return {"spec_decoding": {
        "num_drafts": stats.num_drafts, "num_draft_tokens": stats.num_draft_tokens,
        "num_accepted_tokens": stats.num_accepted_tokens, "acceptance_rate": round(stats.acceptance_rate, 4),
        "mean_acceptance_length": round(stats.mean_acceptance_length, 4),
        "per_position_acceptance": [round(x, 4) for x in stats.per_position_acceptance()],
    }}


def write_json(path: str | None, result: dict[str, Any]) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
