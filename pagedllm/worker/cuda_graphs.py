"""CUDA graphs for decode-only steps: the model forward captured once per padded batch size.

A decode step of a small model (or at batch 1 of any model) is hundreds of short kernels whose
launch cost exceeds their run time; replaying a captured graph launches them all at once. Each
graph reads its inputs from the persistent InputBuffers (worker/input_buffers.py), which a step
fills in place, and writes its hidden states to a tensor owned by the graph's memory pool.

A step of n decode requests runs the graph of the smallest captured size >= n; rows n.. are
padding (token 0, slot -1 so nothing is written, seq_len 1; for verify graphs, query_len tokens
each with seq_len query_len), their outputs are dropped. All
graphs share one memory pool and are captured largest first, so smaller ones reuse its memory.
Only backends whose decode path reads lengths from device memory and never syncs the host can
be captured (BackendCapabilities.cuda_graphs): the torch backend sizes its gather from the step's
max_seq_len, so it runs eager.
"""
from __future__ import annotations

import bisect
import logging
import time
from typing import TYPE_CHECKING

import torch

from pagedllm.attention.base import AttentionBackend, AttentionMetadata
from pagedllm.attention.forward_context import ForwardContext, set_forward_context
from pagedllm.worker.input_buffers import InputBuffers

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE  # what torch.cuda.graph_pool_handle() returns

logger = logging.getLogger(__name__)

def default_graph_sizes(max_num_seqs: int) -> list[int]:
    """vLLM's ladder: 1, 2, 4, then every 8 up to 256, every 16 beyond, capped at max_num_seqs
    (which is always included, so every decode batch has a graph)."""
    ladder = [1, 2, 4, *range(8, 257, 8), *range(272, max_num_seqs + 1, 16)]
    sizes = [s for s in ladder if s < max_num_seqs]
    return [*sizes, max_num_seqs]


# The pools measured for the Llama-3-8B and Qwen3-0.6B shapes (RESULTS.md) held a few times the
# largest decode step's eager peak; the margin covers the per-capture library workspaces on top.
_POOL_MARGIN_BYTES = 128 << 20


def graph_pool_estimate(decode_peak_bytes: int) -> int:
    """Bytes to set aside for the graphs' pool, from the eager peak of the largest decode step."""
    return 2 * decode_peak_bytes + _POOL_MARGIN_BYTES


class CudaGraphRunner:
    def __init__(self, model: torch.nn.Module, backend: AttentionBackend, kv_caches: list[torch.Tensor],
                 buffers: InputBuffers, sizes: list[int], *, max_model_len: int, block_size: int,
                 query_len: int = 1) -> None:
        """`query_len`: the tokens of every request of the steps captured: 1 for decode steps,
        k + 1 for the verify steps of speculative decoding (each request's last token and its k
        drafts), whose attention takes the mixed kernel (its grid too depends only on the token
        and request counts)."""
        self.model, self.backend, self.kv_caches, self.buffers = model, backend, kv_caches, buffers
        self.sizes = sorted(set(sizes))
        self.query_len = query_len
        assert self.sizes[-1] * query_len <= buffers.max_num_tokens, self.sizes
        assert self.sizes[-1] <= buffers.max_num_reqs, self.sizes
        self.max_model_len, self.block_size = max_model_len, block_size
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}  # size -> (graph, hidden)
        self.num_replays = 0

    @property
    def max_size(self) -> int:
        return self.sizes[-1]

    def padded_size(self, num_reqs: int) -> int | None:
        """The captured batch size a decode step of `num_reqs` runs at; None: too large, eager."""
        i = bisect.bisect_left(self.sizes, num_reqs)
        return self.sizes[i] if i < len(self.sizes) else None

    @torch.inference_mode()
    def capture(self, pool: _POOL_HANDLE | None = None) -> float:
        """Capture every size, largest first, into `pool` (shared with the piecewise graphs, or a
        new one); returns the seconds it took."""
        start = time.perf_counter()
        self._fill_padding()
        pool = pool if pool is not None else torch.cuda.graph_pool_handle()
        for size in reversed(self.sizes):
            self.graphs[size] = self._capture_one(size, pool)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        logger.info("Captured %d CUDA graphs (%s batch sizes %d..%d) in %.1f s", len(self.sizes),
                    "decode" if self.query_len == 1 else f"verify, {self.query_len} tokens a request,",
                    self.sizes[0], self.sizes[-1], elapsed)
        return elapsed

    def replay(self, size: int) -> torch.Tensor:
        """Run the graph of `size` on what the buffers hold; returns its hidden states [size * query_len, H]
        (the graph's own tensor: valid until the next replay)."""
        graph, hidden = self.graphs[size]
        graph.replay()
        self.num_replays += 1
        return hidden

    def _capture_one(self, size: int, pool: _POOL_HANDLE) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        tokens = size * self.query_len
        ids, positions = self.buffers.input_ids[:tokens], self.buffers.positions[:tokens]
        ctx = ForwardContext(self._metadata(size), self.kv_caches, self.backend)
        with set_forward_context(ctx):
            # One eager run first: Triton compiles, cuBLAS picks its kernels and backends allocate
            # their workspaces outside the capture.
            self.model(ids, positions)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                hidden = self.model(ids, positions)
        return graph, hidden

    def _metadata(self, size: int) -> AttentionMetadata:
        """What the graph of `size` is captured with: every row a decode request, the device
        tensors the buffers' prefixes. max_seq_len is max_model_len: the split-K partitioning
        baked into the graph must serve any length a replay brings."""
        b, q = self.buffers, self.query_len
        return AttentionMetadata(
            num_actual_tokens=size * q, num_reqs=size,
            query_start_loc=b.query_start_loc[: size + 1],
            seq_lens=b.seq_lens[:size],
            block_table=b.block_table_view(size, b.max_blocks_per_req),
            slot_mapping=b.slot_mapping[: size * q],
            max_query_len=q, max_seq_len=self.max_model_len, block_size=self.block_size,
            query_start_loc_cpu=list(range(0, size * q + 1, q)), seq_lens_cpu=[q] * size,
        )

    def _fill_padding(self) -> None:
        """Buffers as a batch of padding rows, so the capture runs (and writes nothing) safely."""
        b = self.buffers
        b.input_ids.zero_()
        b.positions.zero_()
        b.slot_mapping.fill_(-1)
        b.seq_lens.fill_(self.query_len)
        b.block_table.zero_()
        b.query_start_loc.copy_(self.query_len * torch.arange(b.query_start_loc.numel(), dtype=torch.int32,
                                                              device=b.i32.device))
