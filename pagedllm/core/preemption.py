"""Preemption by recomputation (no torch).

A preempted request gives back all its KV blocks and starts over from token 0 when resumed; its
output tokens so far are kept and become part of the sequence to recompute. Swapping KV out to
host memory is not implemented: recomputing is simpler, and a resumed request often gets most of
its blocks back from the prefix cache (they stay cached in the free queue until evicted).
"""
from __future__ import annotations

from pagedllm.core.kv_cache_manager import KVCacheManager
from pagedllm.core.request import Request, RequestStatus


def preempt(request: Request, kv_cache_manager: KVCacheManager) -> None:
    """Free the request's blocks and reset it so it is recomputed from scratch when resumed.

    The caller removes it from the running list and puts it at the front of the waiting queue.
    """
    kv_cache_manager.free(request)
    request.status = RequestStatus.PREEMPTED
    request.num_computed_tokens = 0
    # A token still in flight for it is dropped when it arrives (the request is not running) and
    # sampled again after the recompute.
    request.num_output_placeholders = 0
    request.spec_token_ids = []  # drafts for the positions it will recompute
    request.num_preemptions += 1
