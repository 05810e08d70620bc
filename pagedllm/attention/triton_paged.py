"""The CUDA attention backend: Triton kernels for the cache write and for paged attention.

Per step, from host-side metadata only (no device syncs, so decode steps can be graph-captured):

* decode-only steps (one token per request) take the decode kernel, split-K when the batch is
  too small to fill the GPU: num_reqs * num_kv_heads programs, times num_splits chosen from
  max_seq_len (or max_model_len while a CUDA graph is being captured, or an explicit
  `metadata.backend_cache["triton_num_splits"]`); the last split of each (request, kv head)
  combines the partials, in the same launch;
* other steps take the mixed kernel: variable-length query tiles, causal within new tokens.

With a QKVPrologue (the attention layer hands over unrotated q/k and the positions): a decode
step's attention kernel rotates q and writes the new K/V itself (one launch per layer, unless
the engine turned `rotary_in_decode` off); other steps run the rotary + cache-write kernel first
(kernels/triton/rotary.py). With the prologue's norm scale (the model folded its input norm into
qkv), the decode kernel also scales q/k/v by 1 / rms(h); other steps scale them in place first
(kernels/triton/norm_scale.py).

The split-K partials and counters live in one workspace per backend (shared by every layer, which run one
after another on the stream), allocated on the first split decode (the profile run or the eager
warm-up before capture, never inside a capture). Its rows hold num_reqs * num_splits partials;
large batches need no splits, so rows = max(4 * max_num_seqs, 32 * max_num_splits) (16 MiB for
Llama-3-8B heads) and the split count is clamped to fit, rather than max_num_seqs x max splits.

For a captured decode graph the caller pads the batch: num_actual_tokens = num_reqs = padded
size, padded requests with seq_len 0 (or 1) and slot -1; they write nothing to the cache and
zeros (or a finite value) to their own output rows.
"""
from __future__ import annotations

import torch

from pagedllm.attention.base import (
    AttentionBackend,
    AttentionBackendOptions,
    AttentionMetadata,
    BackendCapabilities,
    QKVPrologue,
    effective_kv_scales,
)
from pagedllm.kernels.triton.mla_decode import mla_decode
from pagedllm.kernels.triton.norm_scale import scale_qkv_by_inv_rms_
from pagedllm.kernels.triton.paged_attention import NewKV, SplitWorkspace, paged_attention
from pagedllm.kernels.triton.reshape_and_cache import reshape_and_cache
from pagedllm.kernels.triton.rotary import rotary_embedding_and_cache_

NUM_SPLITS_KEY = "triton_num_splits"  # backend_cache key: an explicit split count for this step
# Below this a split's fixed cost (q load, partial write) outweighs its share of the keys: shorter
# splits stopped paying in the split-size sweep at batch 1 (RESULTS.md).
_MIN_KEYS_PER_SPLIT = 128


class TritonPagedAttentionBackend(AttentionBackend):
    name = "triton"
    capabilities = BackendCapabilities(fuses_rotary=True, fuses_qk_norm=True, fuses_norm_scale=True,
                                       cuda_graphs=True)

    def __init__(self, options: AttentionBackendOptions | None = None, max_num_splits: int = 32) -> None:
        super().__init__(options)
        self.max_num_splits = max_num_splits
        self._workspace: SplitWorkspace | None = None
        self._num_sms: int | None = None
        self._latent_ws: tuple[torch.Tensor, torch.Tensor] | None = None  # MLA's split-K scratch

    def configure(self, max_num_seqs: int, max_model_len: int) -> None:
        """Engine limits: the workspace size and the split count used while capturing a graph.
        Call before the first forward (the profile run) so the workspace has its final size."""
        super().configure(max_num_seqs, max_model_len)
        self._workspace = None
        self._latent_ws = None

    def forward(
        self,
        query: torch.Tensor,  # [num_tokens, num_heads, head_size]
        key: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        value: torch.Tensor,  # [num_tokens, num_kv_heads, head_size]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_size]
        metadata: AttentionMetadata,
        scale: float,
        prologue: QKVPrologue | None = None,
        out: torch.Tensor | None = None,
        kv_scales: tuple[float, float] = (1.0, 1.0),
    ) -> torch.Tensor:
        kv_scales = effective_kv_scales(kv_cache, kv_scales)
        if prologue is None:
            reshape_and_cache(key, value, kv_cache, metadata.slot_mapping, metadata.num_actual_tokens, kv_scales)
            return self._attend(query, kv_cache, metadata, scale, out, kv_scales=kv_scales)
        num_tokens, _, head_size = query.shape
        if metadata.is_decode_only and self.options.rotary_in_decode:
            # The decode kernel rotates q in registers and writes the new K/V itself: one launch
            # per layer instead of two (q is left unrotated in memory; nothing reads it after).
            new_kv = NewKV(key.view(num_tokens, -1), value.view(num_tokens, -1), prologue.positions,
                           prologue.cos_sin_cache, metadata.slot_mapping, prologue.qk_norm, prologue.norm_scale)
            return self._attend(query, kv_cache, metadata, scale, out, new_kv, kv_scales)
        if prologue.norm_scale is not None:
            scale_qkv_by_inv_rms_(query, key, value, *prologue.norm_scale)
        rotary_embedding_and_cache_(prologue.positions, query.view(num_tokens, -1), key.view(num_tokens, -1),
                                    value.view(num_tokens, -1), prologue.cos_sin_cache, head_size, kv_cache,
                                    metadata.slot_mapping, metadata.num_actual_tokens, prologue.qk_norm, kv_scales)
        return self._attend(query, kv_cache, metadata, scale, out, kv_scales=kv_scales)

    def forward_latent(self, query: torch.Tensor, rows: torch.Tensor, kv_cache: torch.Tensor,
                       metadata: AttentionMetadata, scale: float, value_size: int) -> torch.Tensor:
        """Decode steps through the MLA kernel (each cached row read once, for its scores and its
        values); steps with prompt tokens through the general path."""
        n = metadata.num_actual_tokens
        if not metadata.is_decode_only or n == 0:
            return super().forward_latent(query, rows, kv_cache, metadata, scale, value_size)
        row = rows.unsqueeze(1)
        reshape_and_cache(row, row, kv_cache, metadata.slot_mapping, n)
        num_splits = self.num_splits(metadata, n, 1)
        out = torch.empty(query.shape[0], query.shape[1], value_size, dtype=query.dtype, device=query.device)
        if n < query.shape[0]:
            out[n:].zero_()
        workspace = self._latent_workspace(query, n * num_splits, value_size)
        mla_decode(query[:n], kv_cache[0], metadata.block_table[:n], metadata.seq_lens[:n], value_size, scale,
                   num_splits, workspace, out[:n])
        return out

    def _latent_workspace(self, query: torch.Tensor, rows: int,
                          value_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLA kernel's split-K scratch, reused by every layer; sized once, before capture."""
        num_heads = query.shape[1]
        ws = self._latent_ws
        if ws is None or ws[0].device != query.device or ws[0].shape[1:] != (num_heads, value_size):
            if _capturing(query):
                raise RuntimeError("The MLA workspace must be allocated before CUDA graph capture: run one eager "
                                   "decode step first.")
            size = self._workspace_rows()
            ws = (torch.empty(size, num_heads, value_size, dtype=torch.float32, device=query.device),
                  torch.empty(size, num_heads, dtype=torch.float32, device=query.device))
            self._latent_ws = ws
        assert rows <= ws[0].shape[0]
        return ws

    def _attend(self, query: torch.Tensor, kv_cache: torch.Tensor, metadata: AttentionMetadata,
                scale: float, out: torch.Tensor | None, new_kv: NewKV | None = None,
                kv_scales: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
        """Attention of every query token over its context, the step's K/V already in the cache.
        A given `out` gets only the first num_actual_tokens rows written (piecewise CUDA graphs:
        the rows past them are padding whose results are dropped)."""
        n = metadata.num_actual_tokens
        if out is None:
            out = torch.empty_like(query)
            if n < query.shape[0]:
                out[n:].zero_()  # rows past num_actual_tokens are padding, as in the torch backend
        if n == 0:
            return out
        if metadata.is_decode_only:
            num_splits = self.num_splits(metadata, n, kv_cache.shape[3])
            workspace = self._split_workspace(query, n * num_splits) if num_splits > 1 else None
            paged_attention(out, query, kv_cache, metadata.block_table, metadata.seq_lens,
                            metadata.query_start_loc, n, n, scale, True, num_splits, workspace, new_kv=new_kv,
                            pdl=query.is_cuda and self.options.pdl, kv_scales=kv_scales)
        else:
            paged_attention(out, query, kv_cache, metadata.block_table, metadata.seq_lens,
                            metadata.query_start_loc, n, metadata.num_reqs, scale, False, kv_scales=kv_scales)
        return out

    def num_splits(self, metadata: AttentionMetadata, num_reqs: int, num_kv_heads: int) -> int:
        """Split-K partitions for a decode step, from host values only: enough programs to fill
        the GPU, each split at least _MIN_KEYS_PER_SPLIT keys, within the workspace."""
        forced = metadata.backend_cache.get(NUM_SPLITS_KEY)
        if forced is not None:
            splits = int(forced)
        else:
            max_len = metadata.max_seq_len
            max_model_len = self.options.max_model_len
            if max_model_len is not None and _capturing(metadata.seq_lens):
                max_len = max_model_len  # the graph replays for any length up to this
            programs = num_reqs * num_kv_heads
            # About two programs per SM: a large batch fills the GPU unsplit, a small one needs splits.
            target = 2 * self._sm_count(metadata.seq_lens.device)
            by_occupancy = -(-target // programs)
            by_length = -(-max_len // _MIN_KEYS_PER_SPLIT)
            splits = min(by_occupancy, by_length, self.max_num_splits)
        capacity = self._workspace_rows() // max(num_reqs, 1)
        return max(1, min(splits, capacity))

    def _workspace_rows(self) -> int:
        # Large batches need no splits; small ones need many: rows = reqs * splits stays bounded.
        return max(4 * self.options.max_num_seqs, self.max_num_splits * 32)

    def _split_workspace(self, query: torch.Tensor, rows: int) -> SplitWorkspace:
        _, num_heads, head_size = query.shape
        ws = self._workspace
        if ws is None or ws.part_out.device != query.device or ws.part_out.shape[1:] != (num_heads, head_size):
            if _capturing(query):
                raise RuntimeError("Triton attention workspace must be allocated before CUDA graph "
                                   "capture: run one eager decode step first.")
            ws = SplitWorkspace.allocate(self._workspace_rows(), num_heads, head_size, query.device)
            self._workspace = ws
        assert rows <= ws.part_out.shape[0]
        return ws

    def _sm_count(self, device: torch.device) -> int:
        if self._num_sms is None:
            self._num_sms = (torch.cuda.get_device_properties(device).multi_processor_count
                             if device.type == "cuda" else 4)
        return self._num_sms


def _capturing(x: torch.Tensor) -> bool:
    return x.is_cuda and torch.cuda.is_current_stream_capturing()
