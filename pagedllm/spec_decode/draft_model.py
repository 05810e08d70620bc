"""A draft model: a smaller model with the target's vocabulary guesses the next k tokens, greedily,
one forward pass per token, over its own paged KV cache.

Its cache has the target's block layout: a block id holds the same positions in both, so the
scheduler's block tables serve both, and the scheduler only adds k slots of lookahead
(SpeculativeConfig.num_lookahead_tokens) for the positions the draft writes before the target
checks them. Per request the proposer remembers how many of its tokens the draft's cache holds;
each propose():

    sequence     |==== in the draft's cache ====| new: accepted drafts, the target's token |
    1. catch up  one pass over every request's new tokens (chunked to max_num_batched_tokens a
                 pass; a new request's whole prompt the first time) -> logits at the last -> y1
    2. draft     k - 1 single-token passes, all requests together: y1 -> y2 -> ... -> yk, their KV
                 written after the sequence (and written again by the next catch-up where the
                 target disagreed)

Greedy drafts are deterministic, so the verifier checks them exactly (verifier.py): the output is
the target's whatever the draft.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from pagedllm.attention.base import AttentionMetadata
from pagedllm.attention.forward_context import ForwardContext, set_forward_context
from pagedllm.sample.sampler import greedy_tokens
from pagedllm.spec_decode.config import SpeculativeConfig
from pagedllm.spec_decode.proposer import DraftRequest, Proposer, ProposerRuntime


class DraftModelProposer(Proposer):
    def __init__(self, config: SpeculativeConfig) -> None:
        super().__init__(config)
        self._runtime: ProposerRuntime | None = None
        self._computed: dict[str, int] = {}  # request -> its leading tokens held in the draft's cache

    def bind(self, runtime: ProposerRuntime) -> None:
        if runtime.draft_model is None or runtime.draft_kv_caches is None or runtime.states is None:
            raise ValueError("The draft_model method needs the worker's draft model, its KV cache and the rows.")
        self._runtime = runtime

    def finish_requests(self, req_ids: Iterable[str]) -> None:
        for req_id in req_ids:
            self._computed.pop(req_id, None)

    def reset_requests(self, req_ids: Iterable[str]) -> None:
        self.finish_requests(req_ids)

    @torch.inference_mode()
    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        rt = self._runtime
        assert rt is not None, "bind() comes first"
        lengths = [len(r.token_ids) for r in requests]
        # The drafts' positions (lengths[i] onwards) must stay inside the context.
        num_drafts = [min(self.num_speculative_tokens, rt.max_model_len - n) for n in lengths]
        live = [i for i, n in enumerate(num_drafts) if n > 0]
        drafts: list[list[int]] = [[] for _ in requests]
        for i, token in zip(live, self._catch_up([requests[i] for i in live], [lengths[i] for i in live])):
            drafts[i].append(token)
        for j in range(1, self.num_speculative_tokens):
            step = [i for i in live if num_drafts[i] > j]
            if not step:
                break
            # draft j (0-based) is input at position lengths + j - 1, after the sequence
            positions = np.array([lengths[i] + j - 1 for i in step], dtype=np.int64)
            tokens = np.array([drafts[i][-1] for i in step], dtype=np.int64)
            for i, token in zip(step, self._forward([requests[i].row for i in step], positions, positions + 1, tokens)):
                drafts[i].append(token)
        for r, n in zip(requests, lengths):
            self._computed[r.req_id] = n
        return drafts

    def _catch_up(self, requests: list[DraftRequest], lengths: list[int]) -> list[int]:
        """Run each request's tokens the draft's cache lacks (at least its last one); the draft's
        next token after each. Passes of at most max_num_batched_tokens tokens."""
        rt = self._runtime
        assert rt is not None
        starts = [min(self._computed.get(r.req_id, 0), n - 1) for r, n in zip(requests, lengths)]
        first: dict[int, int] = {}
        pending = list(range(len(requests)))
        while pending:
            budget = rt.max_num_batched_tokens
            rows, begin, end, chunk = [], [], [], []
            for i in pending:
                if budget <= 0:
                    break
                take = min(lengths[i] - starts[i], budget)
                rows.append(requests[i].row)
                begin.append(starts[i])
                end.append(starts[i] + take)
                chunk.append(i)
                budget -= take
            b, e = np.array(begin, dtype=np.int64), np.array(end, dtype=np.int64)
            counts = e - b
            token_rows = np.repeat(np.array(rows, dtype=np.int64), counts)
            positions = np.repeat(b - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
            assert rt.states is not None
            tokens = rt.states.token_ids[token_rows, positions]
            for i, token, stop in zip(chunk, self._forward(rows, b, e, tokens), e.tolist()):
                starts[i] = stop
                if stop == lengths[i]:
                    first[i] = token
            pending = [i for i in pending if starts[i] < lengths[i]]
        return [first[i] for i in range(len(requests))]

    def _forward(self, rows: list[int], begin: np.ndarray, end: np.ndarray, input_ids: np.ndarray) -> list[int]:
        """One draft pass: row i's tokens at positions begin[i]..end[i]-1 (input_ids, flattened),
        attending to positions [0, end[i]); the draft's greedy token after each row's last."""
        rt = self._runtime
        assert rt is not None
        bs, states = rt.block_size, rt.states
        assert states is not None
        row_ids = np.asarray(rows, dtype=np.int64)
        counts = end - begin
        cu = np.cumsum(counts)
        total = int(cu[-1])
        positions = np.repeat(begin - (cu - counts), counts) + np.arange(total)
        token_rows = np.repeat(row_ids, counts)
        slots = states.block_table[token_rows, positions // bs].astype(np.int64) * bs + positions % bs
        max_blocks = -(-int(end.max()) // bs)
        query_start_loc = np.zeros(len(rows) + 1, dtype=np.int32)
        query_start_loc[1:] = cu
        seq_lens = end.astype(np.int32)

        def dev(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(rt.device)

        metadata = AttentionMetadata(
            num_actual_tokens=total, num_reqs=len(rows), query_start_loc=dev(query_start_loc),
            seq_lens=dev(seq_lens), block_table=dev(states.block_table[row_ids, :max_blocks]),
            slot_mapping=dev(slots), max_query_len=int(counts.max()), max_seq_len=int(end.max()), block_size=bs,
            query_start_loc_cpu=query_start_loc.tolist(), seq_lens_cpu=seq_lens.tolist())
        model, caches = rt.draft_model, rt.draft_kv_caches
        assert caches is not None
        with set_forward_context(ForwardContext(metadata, caches, rt.backend)):
            hidden = model(dev(input_ids.astype(np.int64)), dev(positions))  # [total, hidden]
        logits = model.compute_logits(hidden[dev(cu - 1)])  # [rows, vocab]
        tokens: list[int] = greedy_tokens(logits).tolist()
        return tokens
