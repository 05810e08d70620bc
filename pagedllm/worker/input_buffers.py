"""Persistent device tensors for a step's inputs, each with a pinned host mirror (CUDA only).

A step's arrays are written into the pinned mirrors and sent with one asynchronous copy per
field, so preparing inputs never waits for the GPU (a copy from pageable memory makes torch
synchronize the stream), and the device tensors keep fixed addresses for the CUDA graphs that
read them. Steps use a prefix of each buffer:

    input_ids    | step tokens ... | (graph padding) | unused up to max_num_tokens |
    block_table  flat: an eager step views [num_reqs, its max blocks] compactly; a graph step
                 views [padded batch, max_blocks_per_req] (the width it was captured with)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class _Mirror:
    host: torch.Tensor  # pinned
    host_np: np.ndarray  # numpy view of `host`
    device: torch.Tensor

    @staticmethod
    def new(size: int, dtype: torch.dtype, device: torch.device) -> "_Mirror":
        host = torch.zeros(size, dtype=dtype, pin_memory=True)
        return _Mirror(host, host.numpy(), torch.zeros(size, dtype=dtype, device=device))

    def upload(self, values: np.ndarray) -> torch.Tensor:
        """Send `values` (flat) into the first len(values) elements; returns that device view."""
        n = values.size
        self.host_np[:n] = values.reshape(-1)
        out = self.device[:n]
        out.copy_(self.host[:n], non_blocking=True)
        return out


class InputBuffers:
    def __init__(self, max_num_tokens: int, max_num_reqs: int, max_blocks_per_req: int,
                 device: torch.device) -> None:
        self.max_num_tokens = max_num_tokens
        self.max_num_reqs = max_num_reqs
        self.max_blocks_per_req = max_blocks_per_req
        self.input_ids = _Mirror.new(max_num_tokens, torch.int64, device)  # [T]
        self.positions = _Mirror.new(max_num_tokens, torch.int64, device)  # [T]
        self.slot_mapping = _Mirror.new(max_num_tokens, torch.int64, device)  # [T]
        self.logits_indices = _Mirror.new(max_num_tokens, torch.int64, device)  # [<= T]
        self.query_start_loc = _Mirror.new(max_num_reqs + 1, torch.int32, device)  # [R + 1]
        self.seq_lens = _Mirror.new(max_num_reqs, torch.int32, device)  # [R]
        self.block_table = _Mirror.new(max_num_reqs * max_blocks_per_req, torch.int32, device)  # [R * B] flat
        # The mirrors may be rewritten only once the previous step's copies have left them.
        self._uploaded = torch.cuda.Event()
        self._pending = False

    def begin(self) -> None:
        """Wait (if needed) until the last step's copies have read the pinned mirrors."""
        if self._pending:
            self._uploaded.synchronize()
            self._pending = False

    def end(self) -> None:
        """Mark the copies of this step as queued."""
        self._uploaded.record()
        self._pending = True

    def block_table_view(self, num_reqs: int, width: int) -> torch.Tensor:
        """[num_reqs, width] contiguous view of the device block table."""
        return self.block_table.device[: num_reqs * width].view(num_reqs, width)
