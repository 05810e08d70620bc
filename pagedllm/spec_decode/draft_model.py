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

A greedy request gets the draft's argmax: deterministic, checked exactly (verifier.py). A sampled
request gets tokens sampled from the draft's own distribution q under the request's temperature,
top-k, top-p and min-p (penalties and biases left out: q only has to be what the draft sampled
from); the verifier applies the rejection rule with q, so the output follows the target's
distribution whatever the draft. A seeded request's draft draws come from its (seed, position)
generators on their own stream.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pagedllm.attention.base import AttentionMetadata
from pagedllm.sample.sampler import Sampler, greedy_tokens
from pagedllm.sample.sampling_metadata import SamplingRequest, is_greedy, make_sampling_metadata, to_device
from pagedllm.sample.seeding import position_generator
from pagedllm.sampling_params import SamplingParams
from pagedllm.spec_decode.config import SpeculativeConfig
from pagedllm.spec_decode.proposer import DraftRequest, Proposer, ProposerRuntime
from pagedllm.worker.graphed_forward import graph_sizes, run_forward
from pagedllm.worker.input_buffers import StepTensors

_DRAFT_STREAM = 2  # seeded draws of the draft's own samples (seeding.position_seed's stream)


class DraftModelProposer(Proposer):
    def __init__(self, config: SpeculativeConfig) -> None:
        super().__init__(config)
        self._runtime: ProposerRuntime | None = None
        self._computed: dict[str, int] = {}  # request -> its leading tokens held in the draft's cache
        # sampled request -> the distributions its last drafts were drawn from, one [V] row each
        self._probs: dict[str, list[torch.Tensor]] = {}
        self._sampler = Sampler()  # its distribution() only: temperature and truncation

    def draft_probs(self, req_id: str) -> torch.Tensor | None:
        rows = self._probs.get(req_id)
        return torch.stack(rows) if rows else None

    def bind(self, runtime: ProposerRuntime) -> None:
        if runtime.draft_model is None or runtime.draft_kv_caches is None or runtime.states is None:
            raise ValueError("The draft_model method needs the worker's draft model, its KV cache and the rows.")
        self._runtime = runtime

    def finish_requests(self, req_ids: Iterable[str]) -> None:
        for req_id in req_ids:
            self._computed.pop(req_id, None)
            self._probs.pop(req_id, None)

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
        for r in requests:
            self._probs.pop(r.req_id, None)
        if not live:
            return [[] for _ in requests]
        logits = self._catch_up([requests[i] for i in live], [lengths[i] for i in live])

        def next_pass(step: list[int], j: int, tokens: torch.Tensor, carry: None) -> tuple[torch.Tensor, None]:
            # draft j (0-based) is input at position lengths + j - 1, after the sequence
            positions = np.array([lengths[i] + j - 1 for i in step], dtype=np.int64)
            return self._forward([requests[i].row for i in step], positions, positions + 1, tokens), None

        drafts = self._run_passes(requests, lengths, num_drafts, live, logits, None, next_pass)
        for r, n in zip(requests, lengths):
            self._computed[r.req_id] = n
        return drafts

    def _run_passes(self, requests: list[DraftRequest], lengths: list[int], num_drafts: list[int], live: list[int],
                    logits: torch.Tensor, carry: torch.Tensor | None,
                    next_pass: Callable[..., tuple[torch.Tensor, Any]]) -> list[list[int]]:
        """Drafts of the `live` requests: the first picked from `logits` [L, V], each next one from
        next_pass(step, j, tokens, carry) -> (logits, carry) over the requests still drafting (`carry`:
        per-row state a pass hands the next, e.g. an EAGLE head's output). The tokens stay on the
        device, fed from pass to pass there, and reach the host in one copy at the end."""
        step, tokens = live, self._pick(logits, [requests[i] for i in live], [lengths[i] for i in live])
        passes = [(step, tokens)]
        for j in range(1, self.num_speculative_tokens):
            kept = [k for k, i in enumerate(step) if num_drafts[i] > j]
            if not kept:
                break
            if len(kept) < len(step):  # requests at the end of the context drop out
                index = to_device(kept, torch.int64, tokens.device)
                tokens = tokens.index_select(0, index)
                carry = None if carry is None else carry.index_select(0, index)
                step = [step[k] for k in kept]
            logits, carry = next_pass(step, j, tokens, carry)
            tokens = self._pick(logits, [requests[i] for i in step], [lengths[i] + j for i in step])
            passes.append((step, tokens))
        flat: list[int] = torch.cat([t for _, t in passes]).tolist()
        drafts: list[list[int]] = [[] for _ in requests]
        at = 0
        for step, _ in passes:
            for i in step:
                drafts[i].append(flat[at])
                at += 1
        return drafts

    def _pick(self, logits: torch.Tensor, requests: list[DraftRequest], positions: list[int]) -> torch.Tensor:
        """Each request's draft [R] (on the device) from its row of the draft's logits [R, V]: the
        argmax, or for a sampled request a draw from q (kept for the verifier). positions[i]: the
        sequence position the draft is for."""
        tokens = greedy_tokens(logits)
        sampled = [i for i, r in enumerate(requests) if r.sampling_params is not None
                   and not is_greedy(r.sampling_params)]
        if not sampled:
            return tokens
        device = logits.device
        index = to_device(sampled, torch.int64, device)
        rows = [SamplingRequest(_draft_params(requests[i].sampling_params), [], [], None) for i in sampled]
        q = self._sampler.distribution(logits.index_select(0, index),
                                       make_sampling_metadata(rows, logits.shape[-1], device))  # [S, V]
        u = torch.empty(len(sampled), dtype=torch.float32, device=device).uniform_()
        for k, i in enumerate(sampled):
            r = requests[i]
            assert r.sampling_params is not None
            if r.sampling_params.seed is not None:
                output_index = positions[i] - r.num_prompt_tokens
                u[k : k + 1].uniform_(generator=position_generator(r.sampling_params.seed, output_index, device,
                                                                   _DRAFT_STREAM))
        cdf = q.cumsum(dim=-1)
        drawn = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
        tokens = tokens.index_copy(0, index, drawn.clamp_(max=q.shape[1] - 1).to(tokens.dtype))
        for k, i in enumerate(sampled):
            self._probs.setdefault(requests[i].req_id, []).append(q[k])
        return tokens

    def _catch_up(self, requests: list[DraftRequest], lengths: list[int]) -> torch.Tensor:
        """Run each request's tokens the draft's cache lacks (at least its last one); the draft's
        logits after each [R, V]. Passes of at most max_num_batched_tokens tokens."""
        rt = self._runtime
        assert rt is not None
        starts = [min(self._computed.get(r.req_id, 0), n - 1) for r, n in zip(requests, lengths)]
        first: dict[int, torch.Tensor] = {}
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
            for i, row_logits, stop in zip(chunk, self._forward(rows, b, e), e.tolist()):
                starts[i] = stop
                if stop == lengths[i]:
                    first[i] = row_logits
            pending = [i for i in pending if starts[i] < lengths[i]]
        return torch.stack([first[i] for i in range(len(requests))])

    def _forward(self, rows: list[int], begin: np.ndarray, end: np.ndarray,
                 input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """One draft pass: row i's tokens at positions begin[i]..end[i]-1 (`input_ids` [R] on the
        device, one token a row; None: the rows' own tokens there), attending to positions
        [0, end[i]); the draft's logits after each row's last [rows, V]. On CUDA a pass of one
        token a row replays the draft's decode graph, others its piecewise graphs."""
        rt = self._runtime
        assert rt is not None and rt.draft_kv_caches is not None
        pass_in = self._pass_inputs(rows, begin, end, input_ids, token_offset=0, graphs=True)
        hidden = run_forward(rt.draft_model, rt.backend, rt.draft_kv_caches, rt.draft_graphs, rt.draft_piecewise,
                             pass_in.tensors.input_ids, pass_in.tensors.positions, pass_in.metadata,
                             pass_in.decode_size, pass_in.piecewise_size)  # [total, hidden]
        logits: torch.Tensor = rt.draft_model.compute_logits(hidden[pass_in.tensors.logits_indices])  # [rows, V]
        return logits

    def _pass_inputs(self, rows: list[int], begin: np.ndarray, end: np.ndarray, input_ids: torch.Tensor | None,
                     token_offset: int, graphs: bool) -> DraftPassInputs:
        """A pass's inputs on the device: row i's entries at positions begin[i]..end[i]-1, reading
        the token `token_offset` positions on (0: a model's own tokens; 1: an EAGLE head's entry p
        holds token p + 1), or `input_ids` [R] (one entry a row); padded for the draft's graphs
        where `graphs` and one is captured for the pass."""
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
        ids = (states.token_ids[token_rows, positions + token_offset] if input_ids is None
               else np.zeros(total, dtype=np.int64))
        slots = states.block_table[token_rows, positions // bs].astype(np.int64) * bs + positions % bs
        query_start_loc = np.zeros(len(rows) + 1, dtype=np.int32)
        query_start_loc[1:] = cu
        seq_lens = end.astype(np.int32)
        decode_size, piecewise_size = (graph_sizes(rt.draft_graphs, rt.draft_piecewise, total, len(rows)) if graphs
                                       else (None, None))
        if decode_size is not None:
            block_table = states.block_table[row_ids]  # the graphs' full width
        else:
            block_table = np.ascontiguousarray(states.block_table[row_ids, : -(-int(end.max()) // bs)])
        arrays = (ids, positions, slots, cu - 1, query_start_loc, seq_lens, block_table)
        if rt.buffers is not None:
            dev = rt.buffers.upload(*arrays, decode_size, piecewise_size)
        else:
            dev = StepTensors(*(torch.from_numpy(np.ascontiguousarray(a)).to(rt.device) for a in arrays))
        if input_ids is not None:
            dev.input_ids[:total].copy_(input_ids)
        metadata = AttentionMetadata(
            num_actual_tokens=total, num_reqs=len(rows), query_start_loc=dev.query_start_loc,
            seq_lens=dev.seq_lens, block_table=dev.block_table, slot_mapping=dev.slot_mapping,
            max_query_len=int(counts.max()), max_seq_len=int(end.max()), block_size=bs,
            query_start_loc_cpu=query_start_loc.tolist(), seq_lens_cpu=seq_lens.tolist())
        return DraftPassInputs(dev, metadata, decode_size, piecewise_size)


@dataclass(slots=True)
class DraftPassInputs:
    tensors: StepTensors  # device views (the runner's buffers on CUDA)
    metadata: AttentionMetadata
    decode_size: int | None  # the draft's decode graph to replay, or
    piecewise_size: int | None  # its piecewise graphs' token count (neither: eager)


def _draft_params(params: SamplingParams | None) -> SamplingParams:
    """The request's sampling without what depends on its history (penalties, bias, min_tokens)
    or its seed (the draft's draws are seeded here, on their own stream)."""
    assert params is not None
    return dataclasses.replace(params, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0,
                               logit_bias=None, min_tokens=0, seed=None, logprobs=None, prompt_logprobs=None)
