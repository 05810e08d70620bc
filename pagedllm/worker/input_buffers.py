"""Persistent device buffers for a step's inputs, filled from pinned host mirrors (CUDA only).

A step's arrays are written into pinned host memory and sent with two asynchronous copies, so
preparing inputs never waits for the GPU (a copy from pageable memory makes torch synchronize
the stream) and costs two launches instead of seven; the device tensors keep fixed addresses
for the CUDA graphs that read them. Fields live at fixed offsets of two flat buffers:

    int64  | input_ids [T] | positions [T] | slot_mapping [T] | logits_indices [T] |
    int32  | query_start_loc [R + 1] | seq_lens [R] | block_table [R * W] ............ |

Each copy sends the prefix that holds this step's values (the int64 one up to the last field's
used rows, the int32 one up to the block table rows used). An eager step views its block table
as [num_reqs, its max blocks]; a graph step as [padded batch, W] (the width it was captured with).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class StepTensors:
    """Device views of one step's inputs."""

    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    slot_mapping: torch.Tensor  # [T] int64
    logits_indices: torch.Tensor  # [S] int64
    query_start_loc: torch.Tensor  # [R + 1] int32
    seq_lens: torch.Tensor  # [R] int32
    block_table: torch.Tensor  # [R, W'] int32


class InputBuffers:
    def __init__(self, max_num_tokens: int, max_num_reqs: int, max_blocks_per_req: int,
                 device: torch.device) -> None:
        self.max_num_tokens = t = max_num_tokens
        self.max_num_reqs = r = max_num_reqs
        self.max_blocks_per_req = max_blocks_per_req
        self.i64_host = torch.zeros(4 * t, dtype=torch.int64, pin_memory=True)
        self.i32_host = torch.zeros(2 * r + 1 + r * max_blocks_per_req, dtype=torch.int32, pin_memory=True)
        self.i64 = torch.zeros_like(self.i64_host, device=device)
        self.i32 = torch.zeros_like(self.i32_host, device=device)
        h64, h32 = self.i64_host.numpy(), self.i32_host.numpy()
        # host (numpy) and device views of each field, full length
        self.ids_np, self.pos_np, self.slots_np, self.logits_np = (h64[k * t:(k + 1) * t] for k in range(4))
        self.qsl_np, self.seq_lens_np, self.table_np = h32[: r + 1], h32[r + 1: 2 * r + 1], h32[2 * r + 1:]
        self.input_ids, self.positions, self.slot_mapping, self.logits_indices = (
            self.i64[k * t:(k + 1) * t] for k in range(4))
        self.query_start_loc, self.seq_lens, self.block_table = (
            self.i32[: r + 1], self.i32[r + 1: 2 * r + 1], self.i32[2 * r + 1:])
        self._views: dict[tuple[int, int, int, int], tuple] = {}  # graph-step shapes -> cached views
        # The mirrors may be rewritten only once the previous step's copies have read them.
        self._uploaded = torch.cuda.Event()
        self._pending = False

    def block_table_view(self, num_reqs: int, width: int) -> torch.Tensor:
        """[num_reqs, width] contiguous view of the device block table."""
        return self.block_table[: num_reqs * width].view(num_reqs, width)

    def upload(self, input_ids: np.ndarray, positions: np.ndarray, slot_mapping: np.ndarray,
               logits_indices: np.ndarray, query_start_loc: np.ndarray, seq_lens: np.ndarray,
               block_table: np.ndarray, pad_to: int | None, pad_tokens_to: int | None = None,
               query_len: int = 1) -> StepTensors:
        """Write the step's arrays (block_table [R, W'] already gathered) and send them.
        pad_to: a step of `query_len` tokens per request (decode: 1; a verify step: k + 1) padded
        to that many requests for a CUDA graph: padding requests of query_len tokens, token 0 at
        position 0, slot -1 (no K/V write), seq_len query_len, block table rows 0.
        pad_tokens_to: a step run by piecewise graphs; only input_ids and positions get padding
        rows (token 0 at position 0), the attention metadata stays the step's own."""
        if self._pending:
            self._uploaded.synchronize()
        n, num_reqs, num_logits = len(input_ids), len(seq_lens), len(logits_indices)
        rows = pad_to * query_len if pad_to is not None else pad_tokens_to or n
        self.ids_np[:n], self.pos_np[:n], self.slots_np[:n] = input_ids, positions, slot_mapping
        self.logits_np[:num_logits] = logits_indices
        self.qsl_np[: num_reqs + 1], self.seq_lens_np[:num_reqs] = query_start_loc, seq_lens
        width = block_table.shape[1]
        table = self.table_np[: (num_reqs if pad_to is None else pad_to) * width].reshape(-1, width)
        table[:num_reqs] = block_table
        if pad_to is not None:
            self._pad(n, num_reqs, pad_to, query_len, table)
        elif pad_tokens_to is not None:
            self.ids_np[n:rows] = 0
            self.pos_np[n:rows] = 0
        reqs = num_reqs if pad_to is None else pad_to
        key = (rows, reqs, width, num_logits)
        views = self._views.get(key)
        if views is None:
            views = self._make_views(*key)
            if pad_to is not None:  # graph steps repeat a few shapes; each torch view costs host time
                self._views[key] = views
        tensors, (dev64, host64), (dev32, host32) = views
        if pad_tokens_to is not None:  # the padding rows write no K/V: attention sees the n real ones
            tensors = dataclasses.replace(tensors, slot_mapping=tensors.slot_mapping[:n])
        dev64.copy_(host64, non_blocking=True)
        dev32.copy_(host32, non_blocking=True)
        self._uploaded.record()
        self._pending = True
        return tensors

    def _make_views(self, rows: int, reqs: int, width: int, num_logits: int) -> tuple:
        """The step's device tensors and the (device, host) prefixes its two copies send."""
        tensors = StepTensors(self.input_ids[:rows], self.positions[:rows], self.slot_mapping[:rows],
                              self.logits_indices[:num_logits], self.query_start_loc[: reqs + 1],
                              self.seq_lens[:reqs], self.block_table_view(reqs, width))
        used64 = 3 * self.max_num_tokens + num_logits
        used32 = 2 * self.max_num_reqs + 1 + reqs * width
        return (tensors, (self.i64[:used64], self.i64_host[:used64]),
                (self.i32[:used32], self.i32_host[:used32]))

    def _pad(self, n: int, num_reqs: int, size: int, query_len: int, table: np.ndarray) -> None:
        """Requests num_reqs..size-1 (tokens n.. size * query_len - 1) as padding."""
        end = size * query_len
        self.ids_np[n:end] = 0
        self.pos_np[n:end] = 0
        self.slots_np[n:end] = -1
        self.seq_lens_np[num_reqs:size] = query_len
        self.qsl_np[num_reqs + 1: size + 1] = n + query_len * np.arange(1, size - num_reqs + 1, dtype=np.int32)
        table[num_reqs:] = 0
