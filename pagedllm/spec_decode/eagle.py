"""EAGLE and EAGLE-3 proposers: a one-layer head (models/eagle.py) drafts from the target's own
hidden states, over its own paged KV cache on the target's block ids.

Entry p of the head's cache takes the token at p + 1 and a feature of position p. The runner hands
over the target's hidden states of every step (observe_target); per request the proposer keeps the
features of the positions the head has not read yet. A step's features are kept whole and cut when
its outcome is known: a verify step's rows past the accepted drafts are the rejected ones'.

    sequence x[0..n-1]; the target has computed positions 0..n-2 (x[n-1] is its newest token)
    1. catch up   entries dc..n-2: tokens x[dc+1..n-1], the target's features -> draft 1 (for x[n])
    2. draft      k - 1 single-entry passes: entry n-2+j takes draft j and the head's own output of
                  the entry before -> draft j + 1

A new request starts at the first position the target computed for it: positions before that came
from the prefix cache, whose blocks hold the head's entries written when they were computed (their
staleness could only lower acceptance, never change what is generated).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from pagedllm.spec_decode.config import SpeculativeConfig
from pagedllm.spec_decode.draft_model import DraftModelProposer
from pagedllm.spec_decode.proposer import DraftRequest, ProposerRuntime
from pagedllm.worker.graphed_forward import run_forward

# Features held unread for at most this many steps' worth of tokens a request (prompt chunks are
# read as they come; what remains is a request whose drafts the speculator's gate skips): past it
# the head restarts at the newest step, its entries in between left stale (lower acceptance only).
# Steps after which speculation is off for the batch (disable_by_batch_size) keep nothing at all.
_HELD_STEPS = 4


@dataclass(slots=True)
class _Features:
    start: int  # the position of the first row held
    chunks: list[torch.Tensor] = field(default_factory=list)  # [rows, H] each, consecutive positions
    num_rows: int = 0


class EagleProposer(DraftModelProposer):
    reads_target_hidden = True

    def __init__(self, config: SpeculativeConfig) -> None:
        super().__init__(config)
        self._features: dict[str, _Features] = {}

    def bind(self, runtime: ProposerRuntime) -> None:
        from pagedllm.models.eagle import DraftHead

        super().bind(runtime)
        if not isinstance(runtime.draft_model, DraftHead):
            raise ValueError(f"The {self.config.method} method needs an EAGLE head as its model.")

    def finish_requests(self, req_ids: Iterable[str]) -> None:
        super().finish_requests(req_ids)
        for req_id in req_ids:
            self._features.pop(req_id, None)

    @torch.inference_mode()
    def observe_target(self, req_ids: list[str], starts: list[int], counts: list[int],
                       hidden: torch.Tensor, keep: bool = True) -> None:
        rt = self._runtime
        assert rt is not None
        if not keep:  # speculation is off for the batch: hold nothing; the head restarts later
            for req_id in req_ids:
                self._features.pop(req_id, None)
            return
        n = hidden.shape[0]
        raw = rt.aux_hidden[:n] if rt.aux_hidden is not None else hidden
        features = rt.draft_model.combine_hidden_states(raw)  # [n, H], a tensor of its own
        limit = _HELD_STEPS * rt.max_num_batched_tokens
        offset = 0
        for req_id, start, count in zip(req_ids, starts, counts):
            rows = features[offset: offset + count]
            offset += count
            held = self._features.get(req_id)
            if held is not None and held.num_rows + count > limit:
                held = None  # long unread (speculation off for the batch): restart at this step
            if held is None or start != held.start + held.num_rows:
                if held is not None and held.start <= start < held.start + held.num_rows:
                    self._cut(held, start - held.start)  # the rows past it were rejected drafts'
                else:  # new, or back after a preemption: the head starts where the target did
                    held = self._features[req_id] = _Features(start)
                    self._computed[req_id] = start
            held.chunks.append(rows)
            held.num_rows += count
        self._read_prefill_chunks(req_ids, starts, counts)

    def _read_prefill_chunks(self, req_ids: list[str], starts: list[int], counts: list[int]) -> None:
        """The head reads a prompt chunk by chunk, as the target computes it: an entry needs only
        the next prompt token, known already, so the features of a chunk are not held until the
        prompt's last chunk (a long prompt's would take memory the KV-cache plan never saw)."""
        rt = self._runtime
        assert rt is not None and rt.states is not None
        requests, lengths = [], []
        for req_id, start, count in zip(req_ids, starts, counts):
            state = rt.states.reqs.get(req_id)
            end = start + count  # positions < end computed; entry end - 1 reads the prompt token at end
            if state is None or end >= state.num_prompt_tokens or self._computed.get(req_id) != \
                    self._features[req_id].start:
                continue
            requests.append(DraftRequest(req_id, rt.states.token_ids[state.row, :0], state.num_prompt_tokens,
                                         state.row))
            lengths.append(end + 1)  # as if the sequence reached position end: entries up to end - 1
        if requests:
            self._catch_up_head(requests, lengths)

    @staticmethod
    def _cut(held: _Features, keep: int) -> None:
        rows = torch.cat(held.chunks)[:keep] if held.chunks else None
        held.chunks = [rows] if rows is not None and keep else []
        held.num_rows = keep

    @torch.inference_mode()
    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        rt = self._runtime
        assert rt is not None, "bind() comes first"
        for r in requests:
            self._probs.pop(r.req_id, None)
        lengths = [len(r.token_ids) for r in requests]
        # Drafts go at positions lengths[i] onwards, inside the context; the head needs the
        # target's features of every position it has not read, up to lengths[i] - 2.
        num_drafts = [min(self.num_speculative_tokens, rt.max_model_len - n) for n in lengths]
        live = [i for i, r in enumerate(requests) if num_drafts[i] > 0 and self._ready(r.req_id, lengths[i])]
        if not live:
            return [[] for _ in requests]
        logits, last = self._catch_up_head([requests[i] for i in live], [lengths[i] for i in live])

        def next_pass(step: list[int], j: int, tokens: torch.Tensor,
                      carry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # entry lengths + j - 2 takes draft j and the head's output of the entry before (carry)
            positions = np.array([lengths[i] + j - 2 for i in step], dtype=np.int64)
            return self._head_pass([requests[i].row for i in step], positions, positions + 1, carry, tokens)

        return self._run_passes(requests, lengths, num_drafts, live, logits, last, next_pass)

    def _ready(self, req_id: str, length: int) -> bool:
        """Whether the features of every position the head lacks, up to length - 2, are held."""
        held = self._features.get(req_id)
        if held is None or self._computed.get(req_id) != held.start:
            return False
        return held.start < length - 1 <= held.start + held.num_rows

    def _catch_up_head(self, requests: list[DraftRequest],
                       lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries from each request's first unread position to lengths - 2, in passes of at most
        max_num_batched_tokens; (logits [R, V], the head's output [R, H]) after each request's last."""
        rt = self._runtime
        assert rt is not None
        feats, starts = [], []  # per request: its features [ends - starts, H], from position starts
        for r, n in zip(requests, lengths):
            held = self._features[r.req_id]
            feats.append(torch.cat(held.chunks)[: n - 1 - held.start])
            starts.append(held.start)
            self._computed[r.req_id] = n - 1
            self._features[r.req_id] = _Features(n - 1)
        ends = [n - 1 for n in lengths]
        firsts = list(starts)
        results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        pending = list(range(len(requests)))
        while pending:
            budget = rt.max_num_batched_tokens
            chunk, begin, end = [], [], []
            for i in pending:
                if budget <= 0:
                    break
                take = min(ends[i] - starts[i], budget)
                chunk.append(i)
                begin.append(starts[i])
                end.append(starts[i] + take)
                budget -= take
            hidden = torch.cat([feats[i][b - firsts[i]: e - firsts[i]] for i, b, e in zip(chunk, begin, end)])
            logits, last = self._head_pass([requests[i].row for i in chunk], np.array(begin, dtype=np.int64),
                                           np.array(end, dtype=np.int64), hidden)
            for k, (i, stop) in enumerate(zip(chunk, end)):
                starts[i] = stop
                if stop == ends[i]:
                    results[i] = (logits[k], last[k])
            pending = [i for i in pending if starts[i] < ends[i]]
        return (torch.stack([results[i][0] for i in range(len(requests))]),
                torch.stack([results[i][1] for i in range(len(requests))]))

    def _head_pass(self, rows: list[int], begin: np.ndarray, end: np.ndarray, hidden: torch.Tensor,
                   input_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of the head: row i's entries begin[i]..end[i]-1 with features `hidden`
        [total, H] and the tokens one position on (or `input_ids` [R], one entry a row);
        (logits [R, V], the head's output [R, H]) at each row's last entry."""
        rt = self._runtime
        assert rt is not None and rt.draft_kv_caches is not None and rt.head_step is not None
        pass_in = self._pass_inputs(rows, begin, end, input_ids, token_offset=1, graphs=True)
        t = pass_in.tensors
        rt.head_step.features[: hidden.shape[0]].copy_(hidden)
        out = run_forward(rt.head_step, rt.backend, rt.draft_kv_caches, rt.draft_graphs, rt.draft_piecewise,
                          t.input_ids, t.positions, pass_in.metadata, pass_in.decode_size,
                          pass_in.piecewise_size)  # [total, H]
        last = out[t.logits_indices]  # a copy: the graphs' output is rewritten by the next pass
        return rt.draft_model.compute_logits(last), last
