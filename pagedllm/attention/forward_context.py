"""A scoped context carrying the step's attention metadata and KV caches to the model's layers."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from pagedllm.attention.base import AttentionBackend, AttentionMetadata
from pagedllm.scoped import Scoped


@dataclass
class ForwardContext:
    attn_metadata: AttentionMetadata
    kv_caches: list[torch.Tensor]  # one per layer, AttentionBackend.kv_cache_shape
    backend: AttentionBackend


_current: Scoped[ForwardContext] = Scoped()


def set_forward_context(ctx: ForwardContext) -> contextlib.AbstractContextManager[ForwardContext]:
    """The attention layers of a forward run inside this scope read `ctx`."""
    return _current.use(ctx)


def get_forward_context() -> ForwardContext:
    ctx = _current.value
    if ctx is None:
        raise RuntimeError("No forward context: run the model inside set_forward_context(...).")
    return ctx
