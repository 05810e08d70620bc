"""CUDA graphs for steps with prompt tokens: the forward captured in pieces between attention calls.

A decode-only step replays one graph of the whole forward (worker/cuda_graphs.py). A step with
prompt tokens cannot: its attention's grid and work follow how the tokens split into requests,
which changes every step. Everything else in the forward (embedding, norms, GEMMs, activations)
depends only on the number of tokens, so it is captured per padded token count, one graph per
stretch between two attention calls, and attention runs eagerly in between on the step's own
metadata (vLLM's piecewise CUDA graphs; here the attention call itself marks the cuts):

    graph 0      embedding, layer 0 norm + qkv GEMM, q/k/v copied into the static buffers
    attention 0  eager: static q/k/v -> KV cache, attention -> static out
    graph 1      layer 0 o_proj (reads static out), norm, MLP, layer 1 norm + qkv, copy
    ...
    graph L      layer L-1 o_proj, norm, MLP, final norm -> hidden states

Eager steps with prompt tokens are bound by the host's launches (thousands of small launches per
step for a small model; even an 8B model's short prefills took several times their GEMMs' time,
RESULTS.md). Here a step costs one replay per piece plus the attention layers' own launches.

Static buffers: q/k/v and the attention output live in one pair of persistent tensors shared by
every layer and size (layers run one after another). Copying q/k/v into them costs one small
copy kernel per layer inside the graph; keeping each piece's own q/k/v alive instead would pin
layers x sizes of activations.

Memory: all pieces of all sizes (and the decode graphs) share one pool. That is safe because
replays come in capture order on one stream: a piece only reuses memory freed by pieces that ran
before it. The largest size is captured first, so the smaller ones fit in what it freed.

Padding rows (n..size-1 of a step of n tokens) hold token 0 at position 0. Attention writes only
the first n rows of the static output; the padding rows keep finite values from earlier steps
(the buffer starts zeroed), and rows never mix outside attention, so their results are dropped.
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pagedllm.attention.base import AttentionBackend, AttentionMetadata, QKVPrologue
from pagedllm.attention.forward_context import ForwardContext, set_forward_context
from pagedllm.kernels.qkv_layout import merged_qkv_rows
from pagedllm.worker.input_buffers import InputBuffers
from pagedllm.worker.memory import dummy_prefill

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE  # what torch.cuda.graph_pool_handle() returns

logger = logging.getLogger(__name__)


MAX_PADDED_SIZE = 512  # steps up to this many tokens are padded to the next captured size
# The step budget is captured too when at most this: the pool holds a forward's activations at
# the largest captured size, memory the KV cache loses.
MAX_CAPTURED_SIZE = 4096


def default_piecewise_sizes(max_num_batched_tokens: int) -> list[int]:
    """Token counts to capture: multiples of 16 up to 128, of 32 up to 256, of 64 up to 512 (at
    most a quarter of a step is padding), then the step budget itself (up to MAX_CAPTURED_SIZE),
    the size of every full step of a busy server. Steps between 512 and the budget run eagerly:
    their GPU work outweighs the launches, and padding them would cost more than it saves."""
    ladder = list(range(16, 129, 16)) + list(range(160, 257, 32)) + list(range(320, MAX_PADDED_SIZE + 1, 64))
    sizes = {s for s in ladder if s < max_num_batched_tokens}
    if max_num_batched_tokens <= MAX_CAPTURED_SIZE:
        sizes.add(max_num_batched_tokens)
    return sorted(sizes)


def piecewise_padded_size(sizes: list[int], num_tokens: int) -> int | None:
    """The captured token count (of sorted `sizes`) a step of `num_tokens` runs at; None: eager.
    Past MAX_PADDED_SIZE only an exact size counts: a large step's GPU work outweighs its
    launches, and padding it would cost more than the graph saves."""
    i = bisect.bisect_left(sizes, num_tokens)
    if i == len(sizes):
        return None
    size = sizes[i]
    return size if size == num_tokens or size <= MAX_PADDED_SIZE else None


def static_buffer_bytes(max_tokens: int, num_heads: int, num_kv_heads: int, head_size: int,
                        dtype: torch.dtype) -> int:
    """The persistent q/k/v and attention-output buffers for `max_tokens` rows."""
    width = (2 * num_heads + 2 * num_kv_heads) * head_size  # q + k + v, and the output
    return max_tokens * width * torch.empty(0, dtype=dtype).element_size()


@dataclass
class _StaticBuffers:
    qkv: torch.Tensor  # [max_tokens, (num_heads + 2 * num_kv_heads) * head_size]
    out: torch.Tensor  # [max_tokens, num_heads, head_size]

    def views(self, size: int, num_heads: int, num_kv_heads: int,
              head_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, k, v, out) for `size` rows, shaped [size, heads, head_size] like the backend's arguments."""
        rows = self.qkv[:size]
        q_end, k_end = num_heads * head_size, (num_heads + num_kv_heads) * head_size
        return (rows[:, :q_end].view(size, num_heads, head_size),
                rows[:, q_end:k_end].view(size, num_kv_heads, head_size),
                rows[:, k_end:].view(size, num_kv_heads, head_size),
                self.out[:size])


@dataclass
class _AttentionCall:
    """One attention layer of a captured size, replayed eagerly between two pieces."""

    backend: AttentionBackend
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    kv_cache: torch.Tensor
    scale: float
    prologue: QKVPrologue | None  # what the backend does to q/k first (its norm scale already applied)
    kv_scales: tuple[float, float]

    def __call__(self, metadata: AttentionMetadata) -> None:
        self.backend.forward(self.q, self.k, self.v, self.kv_cache, metadata, self.scale, self.prologue, out=self.out,
                             kv_scales=self.kv_scales)


@dataclass
class _PiecewiseGraph:
    pieces: list[torch.cuda.CUDAGraph]  # len(calls) + 1
    calls: list[_AttentionCall]
    hidden: torch.Tensor  # [size, H], written by the last piece


class _Cutter(AttentionBackend):
    """Stands in for the real backend while a size is captured: each attention call copies q/k/v
    into the static buffers, ends the current piece, records the call and begins the next piece.
    Outside a capture (the warm-up run) it only copies, so the pieces' kernels compile and pick
    their algorithms before anything is captured.

    It takes whatever prologue the real backend's capabilities let the layers hand over, and
    applies the norm scale itself inside the piece: the scale reads the hidden state, which only
    the graph's own memory holds, so the eager call between pieces must not need it."""

    name = "piecewise-cutter"

    def __init__(self, inner: AttentionBackend, get_buffers: Callable[[torch.Tensor, torch.Tensor], _StaticBuffers],
                 pool: _POOL_HANDLE) -> None:
        super().__init__(inner.options)
        self.inner = inner
        self.capabilities = inner.capabilities
        self._get_buffers = get_buffers
        self._pool = pool
        self.capturing = False
        self.pieces: list[torch.cuda.CUDAGraph] = []
        self.calls: list[_AttentionCall] = []

    def begin_piece(self) -> None:
        graph = torch.cuda.CUDAGraph()
        graph.capture_begin(pool=self._pool)
        self.pieces.append(graph)

    def end_piece(self) -> None:
        self.pieces[-1].capture_end()

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                metadata: AttentionMetadata, scale: float, prologue: QKVPrologue | None = None,
                out: torch.Tensor | None = None, kv_scales: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
        if prologue is not None and prologue.norm_scale is not None:
            from pagedllm.kernels.triton.norm_scale import scale_qkv_by_inv_rms_

            scale_qkv_by_inv_rms_(query, key, value, *prologue.norm_scale)
            prologue = dataclasses.replace(prologue, norm_scale=None)
        size, num_heads, head_size = query.shape
        num_kv_heads = key.shape[1]
        q, k, v, static_out = self._get_buffers(query, key).views(size, num_heads, num_kv_heads, head_size)
        copy_qkv(q, k, v, query, key, value)
        if self.capturing:
            self.end_piece()
            self.calls.append(_AttentionCall(self.inner, q, k, v, static_out, kv_cache, scale, prologue, kv_scales))
            self.begin_piece()
        return static_out


def copy_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    """One copy when query/key/value are the consecutive column ranges of one [T, W] tensor (the
    merged qkv GEMM's output), else three."""
    src = merged_qkv_rows(query, key, value)
    if src is not None:
        size, width = src.shape
        torch.as_strided(q, (size, width), (q.stride(0), 1), q.storage_offset()).copy_(src)
    else:
        q.copy_(query)
        k.copy_(key)
        v.copy_(value)


class PiecewiseGraphRunner:
    def __init__(self, model: torch.nn.Module, backend: AttentionBackend, kv_caches: list[torch.Tensor],
                 buffers: InputBuffers, sizes: list[int], *, block_size: int) -> None:
        self.model, self.backend, self.kv_caches, self.buffers = model, backend, kv_caches, buffers
        self.sizes = sorted(set(sizes))
        assert self.sizes[-1] <= buffers.max_num_tokens, self.sizes
        self.block_size = block_size
        self.graphs: dict[int, _PiecewiseGraph] = {}
        self._static: dict[tuple, _StaticBuffers] = {}
        self.num_replays = 0

    @property
    def max_size(self) -> int:
        return self.sizes[-1]

    def padded_size(self, num_tokens: int) -> int | None:
        return piecewise_padded_size(self.sizes, num_tokens)

    @torch.inference_mode()
    def capture(self, pool: _POOL_HANDLE) -> float:
        """Capture every size, largest first, into `pool` (shared with the decode graphs); returns
        the seconds it took."""
        start = time.perf_counter()
        for size in reversed(self.sizes):
            self.graphs[size] = self._capture_one(size, pool)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        logger.info("Captured piecewise CUDA graphs for %d token counts (%d..%d, %d pieces each) in %.1f s",
                    len(self.sizes), self.sizes[0], self.sizes[-1], len(self.graphs[self.sizes[0]].pieces),
                    elapsed)
        return elapsed

    def run(self, size: int, metadata: AttentionMetadata) -> torch.Tensor:
        """The forward of the step in the buffers (its first metadata.num_actual_tokens rows real,
        the rest padding up to `size`); returns the graph's hidden states [size, H], valid until
        this size runs again."""
        graph = self.graphs[size]
        pieces = graph.pieces
        for i, call in enumerate(graph.calls):
            pieces[i].replay()
            call(metadata)
        pieces[-1].replay()
        self.num_replays += 1
        return graph.hidden

    def _capture_one(self, size: int, pool: _POOL_HANDLE) -> _PiecewiseGraph:
        ids, positions = self.buffers.input_ids[:size], self.buffers.positions[:size]
        ids.zero_()
        positions.zero_()
        cutter = _Cutter(self.backend, self._static_buffers, pool)
        metadata, _, _ = dummy_prefill([size], self.block_size, 1, ids.device)  # never read: attention is cut out
        stream = torch.cuda.Stream()
        with set_forward_context(ForwardContext(metadata, self.kv_caches, cutter)):
            self.model(ids, positions)  # warm-up: Triton compiles, cuBLAS picks its kernels
            torch.cuda.synchronize()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                cutter.capturing = True
                cutter.begin_piece()
                hidden = self.model(ids, positions)
                cutter.end_piece()
            torch.cuda.current_stream().wait_stream(stream)
        return _PiecewiseGraph(cutter.pieces, cutter.calls, hidden)

    def _static_buffers(self, query: torch.Tensor, key: torch.Tensor) -> _StaticBuffers:
        """The shared buffers for this model's attention shapes (allocated at the first warm-up,
        outside any capture, zeroed so padding rows stay finite)."""
        _, num_heads, head_size = query.shape
        num_kv_heads = key.shape[1]
        shape = (num_heads, num_kv_heads, head_size, query.dtype)
        buffers = self._static.get(shape)
        if buffers is None:
            assert not torch.cuda.is_current_stream_capturing(), "static buffers must exist before capture"
            rows, device = self.max_size, query.device
            buffers = _StaticBuffers(
                torch.zeros(rows, (num_heads + 2 * num_kv_heads) * head_size, dtype=query.dtype, device=device),
                torch.zeros(rows, num_heads, head_size, dtype=query.dtype, device=device))
            self._static[shape] = buffers
        return buffers
