"""How much device memory the KV cache may take, from a profiled worst-case step.

    total device memory x gpu_memory_utilization
    = in use now (weights, CUDA context, library workspaces, other engines and processes)
      + peak activations of a step (+ logits/sampler) + CUDA-graph pool
      + KV cache                                                     <- what is left

The arithmetic (`kv_cache_budget`, `plan_kv_cache`) is plain Python so it is tested anywhere; the
profile itself (`profile_step_memory`) runs the model once on a dummy batch as large as the
scheduler may form: max_num_batched_tokens prompt tokens, then logits and sampling for
max_num_seqs rows.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pagedllm.attention.base import AttentionBackend, AttentionMetadata
from pagedllm.attention.forward_context import ForwardContext, set_forward_context
from pagedllm.sample.sampler import Sampler
from pagedllm.sample.sampling_metadata import SamplingRequest, make_sampling_metadata
from pagedllm.sampling_params import SamplingParams
from pagedllm.worker.kv_cache import KVCacheSpec, allocate_kv_caches

if TYPE_CHECKING:
    from pagedllm.models.common import DecoderForCausalLM

logger = logging.getLogger(__name__)
_MiB = 1 << 20


@dataclass(frozen=True)
class MemoryProfile:
    total_bytes: int  # the device's memory
    in_use_bytes: int  # used on the device after profiling (torch's cache emptied), weights included
    weights_bytes: int  # of which: this model's weights (for the log)
    peak_activation_bytes: int  # above that, during the worst-case step (dummy KV cache excluded)
    cuda_graph_bytes: int  # expected private pool of the decode graphs (0 when running eager)

    def describe(self) -> str:
        return (f"total {self.total_bytes / _MiB:.0f} MiB, in use {self.in_use_bytes / _MiB:.0f} MiB "
                f"(weights {self.weights_bytes / _MiB:.0f} MiB), peak activations "
                f"{self.peak_activation_bytes / _MiB:.0f} MiB, CUDA graphs ~{self.cuda_graph_bytes / _MiB:.0f} MiB")


@dataclass(frozen=True)
class KVCachePlan:
    num_blocks: int
    max_model_len: int  # lowered when the configured one did not fit a single request
    max_concurrency: float  # how many requests of max_model_len tokens fit at once


def kv_cache_budget(profile: MemoryProfile, gpu_memory_utilization: float) -> int:
    """Bytes left for the KV cache (may be negative: nothing fits)."""
    used = profile.in_use_bytes + profile.peak_activation_bytes + profile.cuda_graph_bytes
    return int(profile.total_bytes * gpu_memory_utilization) - used


def plan_kv_cache(budget_bytes: int, bytes_per_block: int, block_size: int, max_model_len: int,
                  max_model_len_explicit: bool) -> KVCachePlan:
    """Blocks that fit in the budget; lowers a derived max_model_len that not even one request
    fits (an explicit one is an error: the user asked for that context)."""
    num_blocks = max(budget_bytes, 0) // bytes_per_block
    if num_blocks < 1:
        raise ValueError(
            f"No KV cache block fits: {budget_bytes / _MiB:.0f} MiB left after weights, activations and "
            f"CUDA graphs, a block takes {bytes_per_block / _MiB:.2f} MiB. Raise gpu_memory_utilization, "
            "lower max_num_batched_tokens / max_num_seqs, or use a smaller model or dtype.")
    fits = num_blocks * block_size
    if fits < max_model_len:
        if max_model_len_explicit:
            raise ValueError(
                f"max_model_len={max_model_len} needs {math.ceil(max_model_len / block_size)} KV blocks but "
                f"only {num_blocks} fit ({fits} tokens). Lower max_model_len to at most {fits}, raise "
                "gpu_memory_utilization, or lower max_num_batched_tokens / max_num_seqs.")
        logger.warning("The model's context of %d tokens does not fit in the KV cache (%d blocks of %d tokens); "
                       "max_model_len lowered to %d.", max_model_len, num_blocks, block_size, fits)
        max_model_len = fits
    return KVCachePlan(num_blocks, max_model_len, fits / max_model_len)


def profile_step_memory(
    model: DecoderForCausalLM,
    backend: AttentionBackend,
    spec: KVCacheSpec,
    *,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    max_model_len: int,
    vocab_size: int,
    device: torch.device,
    decode: bool = False,
    sample: bool = True,
    sampler: Sampler | None = None,
) -> int:
    """Peak bytes a step allocates above what is allocated now (weights), for the largest batch:
    max_num_batched_tokens prompt tokens through the model, then logits and a sampler run with
    every feature on for max_num_seqs rows. The dummy KV cache it writes into is not counted.

    decode=True: the forward alone of a decode step of max_num_batched_tokens requests, sized for
    contexts up to max_model_len (what a captured graph's pool holds). sample=False: the forward
    alone of the prefill (what the piecewise graphs' pool holds). `sampler`: the engine's (its
    stage's memory is what a step takes)."""
    lens = [1] * max_num_batched_tokens if decode else _prefill_lengths(max_num_batched_tokens, max_model_len)
    num_blocks = sum(math.ceil(n / spec.block_size) for n in lens)
    caches = allocate_kv_caches(spec, num_blocks, backend, device)
    cache_bytes = sum(c.numel() * c.element_size() for c in caches)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    metadata, input_ids, positions = dummy_prefill(lens, spec.block_size, vocab_size, device)
    if decode:
        metadata.max_seq_len = max_model_len  # backends size split-K work for the longest context
    with torch.inference_mode(), set_forward_context(ForwardContext(metadata, caches, backend)):
        hidden = model(input_ids, positions)  # [T, H]
        if not decode and sample:
            rows = torch.arange(max_num_seqs, device=device) % hidden.shape[0]
            logits = model.compute_logits(hidden[rows])  # [max_num_seqs, V]
            _run_sampler(sampler or Sampler(), logits, max_num_seqs, vocab_size, device)
            del logits
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del hidden, caches
    torch.cuda.empty_cache()
    logger.info("Profiled a %s step of %d tokens (%d requests)%s: peak %.0f MiB above weights "
                "(dummy KV cache of %.0f MiB allocated before, not counted)", "decode" if decode else "prefill",
                sum(lens), len(lens), "" if decode or not sample else f" and {max_num_seqs} sampled rows", peak / _MiB,
                cache_bytes / _MiB)
    return peak


def in_use_bytes(device: torch.device) -> int:
    """Device memory in use now by anyone: this process's tensors and CUDA context, library
    workspaces, other engines in this process and other processes on the same card."""
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    return total - free


def _prefill_lengths(num_tokens: int, max_model_len: int) -> list[int]:
    """The scheduler's token budget as prompts of at most max_model_len tokens each."""
    full, rest = divmod(num_tokens, max_model_len)
    return [max_model_len] * full + ([rest] if rest else [])


def dummy_prefill(lens: list[int], block_size: int, vocab_size: int,
                   device: torch.device) -> tuple[AttentionMetadata, torch.Tensor, torch.Tensor]:
    """Metadata for fresh prompts of `lens` tokens, each in its own consecutive blocks."""
    blocks_per_req = [math.ceil(n / block_size) for n in lens]
    max_blocks = max(blocks_per_req)
    block_table = torch.zeros(len(lens), max_blocks, dtype=torch.int32)
    slots, positions, first = [], [], 0
    for i, (n, nb) in enumerate(zip(lens, blocks_per_req)):
        block_table[i, :nb] = torch.arange(first, first + nb, dtype=torch.int32)
        pos = torch.arange(n)
        positions.append(pos)
        slots.append(first * block_size + pos)
        first += nb
    qsl = [0]
    for n in lens:
        qsl.append(qsl[-1] + n)
    metadata = AttentionMetadata(
        num_actual_tokens=qsl[-1], num_reqs=len(lens),
        query_start_loc=torch.tensor(qsl, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(lens, dtype=torch.int32, device=device),
        block_table=block_table.to(device), slot_mapping=torch.cat(slots).to(device),
        max_query_len=max(lens), max_seq_len=max(lens), block_size=block_size,
        query_start_loc_cpu=qsl, seq_lens_cpu=list(lens),
    )
    input_ids = torch.randint(0, vocab_size, (qsl[-1],), device=device)
    return metadata, input_ids, torch.cat(positions).to(device)


def _run_sampler(sampler: Sampler, logits: torch.Tensor, num_rows: int, vocab_size: int,
                 device: torch.device) -> None:
    """The sampler with every stage on (penalties, top-k/p, min-p, logprobs): its worst case."""
    params = SamplingParams(temperature=0.8, top_p=0.9, min_p=0.01, repetition_penalty=1.1,
                            frequency_penalty=0.1, logprobs=5)
    rows = [SamplingRequest(params, [1, 2, 3], [4, 5], None) for _ in range(num_rows)]
    sampler.forward(logits, make_sampling_metadata(rows, vocab_size, device))
