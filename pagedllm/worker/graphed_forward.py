"""A model's forward on one step's inputs, by the fastest means captured for its shape: the decode
graph of its padded batch, the piecewise graphs of its padded token count, or eagerly. Shared by
the target's runner and a draft model's passes (spec_decode/draft_model.py)."""
from __future__ import annotations

import torch

from pagedllm.attention.base import AttentionBackend, AttentionMetadata
from pagedllm.attention.forward_context import ForwardContext, set_forward_context
from pagedllm.worker.cuda_graphs import CudaGraphRunner
from pagedllm.worker.piecewise_graphs import PiecewiseGraphRunner


def graph_sizes(graphs: CudaGraphRunner | None, piecewise: PiecewiseGraphRunner | None, num_tokens: int,
                num_reqs: int) -> tuple[int | None, int | None]:
    """(padded batch of the full graphs `graphs`, padded token count of the piecewise graphs) a
    step of `num_tokens` tokens in `num_reqs` requests runs at: the full graph when every request
    has the graphs' query_len tokens (the caller picks the runner: decode or verify); at most one
    is set, neither for an eager step."""
    if graphs is not None and num_tokens == num_reqs * graphs.query_len:
        size = graphs.padded_size(num_reqs)
        if size is not None:
            return size, None
    if piecewise is not None:
        return None, piecewise.padded_size(num_tokens)
    return None, None


def run_forward(model: torch.nn.Module, backend: AttentionBackend, kv_caches: list[torch.Tensor],
                graphs: CudaGraphRunner | None, piecewise: PiecewiseGraphRunner | None, input_ids: torch.Tensor,
                positions: torch.Tensor, metadata: AttentionMetadata, decode_size: int | None,
                piecewise_size: int | None) -> torch.Tensor:
    """Hidden states [num_actual_tokens, H] of the step whose inputs are in the graphs' buffers
    (for a graph size) or in `input_ids` / `positions` (eager)."""
    n = metadata.num_actual_tokens
    if decode_size is not None:
        assert graphs is not None
        return graphs.replay(decode_size)[:n]
    if piecewise_size is not None:
        assert piecewise is not None
        return piecewise.run(piecewise_size, metadata)[:n]
    with set_forward_context(ForwardContext(metadata, kv_caches, backend)):
        hidden: torch.Tensor = model(input_ids, positions)
    return hidden
