"""Runs one step: update request states from the scheduler's diff, build inputs, forward, sample."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pagedllm.attention.base import AttentionBackend
from pagedllm.core.scheduler_output import GrammarOutput, SchedulerOutput
from pagedllm.outputs import LogprobsLists, ModelRunnerOutput
from pagedllm.sample.sampler import SampledBatch, Sampler, compute_prompt_logprobs
from pagedllm.sample.sampling_metadata import SamplingRequest, has_penalty, make_sampling_metadata
from pagedllm.sample.token_bitmask import apply_token_bitmask_
from pagedllm.spec_decode.verifier import VerifiedBatch
from pagedllm.worker.cuda_graphs import CudaGraphRunner
from pagedllm.worker.graphed_forward import graph_sizes, run_forward
from pagedllm.worker.input_buffers import InputBuffers
from pagedllm.worker.input_builder import ModelInput, build_model_input
from pagedllm.worker.piecewise_graphs import PiecewiseGraphRunner
from pagedllm.worker.request_states import RequestStates, RowState

if TYPE_CHECKING:
    from pagedllm.models.common import DecoderForCausalLM
    from pagedllm.platforms.base import TokenMaskStage
    from pagedllm.spec_decode.speculator import Speculator

_PROMPT_LOGITS_CHUNK = 256


class RunnerStep:
    """One launched step; `result()` waits for its sampled tokens, records them in the runner's
    request states (rows still owned by the same request) and returns the step's output, with
    the next drafts when a speculator is given."""

    def __init__(self, states: RequestStates | None, output: ModelRunnerOutput, sample_states: list[RowState],
                 batch: SampledBatch | VerifiedBatch | None, has_penalties: bool,
                 speculator: Speculator | None = None) -> None:
        self._states = states
        self._output = output
        self._sample_states = sample_states
        self._batch = batch
        self.has_penalties = has_penalties
        self.done = batch is None
        self._speculator = speculator

    @classmethod
    def empty(cls) -> RunnerStep:
        return cls(None, ModelRunnerOutput(req_ids=[], sampled_token_ids=[]), [], None, False)

    @property
    def sampled(self) -> torch.Tensor | None:
        """[S] the sampled tokens on the device, in sample_states order."""
        return None if self._batch is None else self._batch.sampled

    def result(self) -> ModelRunnerOutput:
        if self.done:
            return self._output
        self.done = True
        assert self._batch is not None and self._states is not None
        batch = self._batch
        if isinstance(batch, VerifiedBatch):  # a step that checked drafts: several tokens per request
            verified = batch.result()
            self._record(verified.token_runs, verified.logprobs)
            if self._speculator is not None:
                self._speculator.observe([s.req_id for s in self._sample_states], batch.drafts, verified.token_runs)
        else:
            sampled = batch.result()
            self._record([[t] for t in sampled.sampled_token_ids], sampled.logprobs)
        if self._speculator is not None:
            self._propose(self._speculator, self._states)
        return self._output

    def _propose(self, speculator: Speculator, states: RequestStates) -> None:
        current = [s for s in self._sample_states if states.is_current(s)]
        self._output.spec_token_ids = speculator.propose(
            [s.req_id for s in current], [states.sequence(s) for s in current], [s.num_prompt_tokens for s in current],
            [s.row for s in current], [s.sampling_params for s in current])

    def _record(self, runs: list[list[int]], logprobs: list[LogprobsLists | None]) -> None:
        """Each sampled row's new tokens into the runner's states (rows still owned by their
        request) and the step's output."""
        states, output = self._states, self._output
        assert states is not None
        index = {req_id: i for i, req_id in enumerate(output.req_ids)}
        for state, run, row_logprobs in zip(self._sample_states, runs, logprobs):
            if states.is_current(state):
                state.num_pending -= 1
                for token_id in run:
                    states.append_sampled(state, token_id)
            output.sampled_token_ids[index[state.req_id]] = run
            if row_logprobs is not None:
                output.logprobs[state.req_id] = row_logprobs


class ModelRunner:
    def __init__(
        self,
        model: DecoderForCausalLM,
        backend: AttentionBackend,
        kv_caches: list[torch.Tensor],
        *,
        vocab_size: int,
        eos_token_id: int | None,
        block_size: int,
        max_num_reqs: int,
        max_model_len: int,
        device: torch.device,
        sampler: Sampler | None = None,
        buffers: InputBuffers | None = None,
        graphs: CudaGraphRunner | None = None,
        piecewise: PiecewiseGraphRunner | None = None,
        speculator: Speculator | None = None,
        verify_graphs: CudaGraphRunner | None = None,
        token_mask: TokenMaskStage = apply_token_bitmask_,
    ) -> None:
        """`buffers` (CUDA): persistent pinned/device input tensors; `graphs`: captured decode
        graphs reading from them; `piecewise`: captured pieces for steps with prompt tokens.
        All None on the CPU, where tensors are built per step. `sampler`: the platform's (with its
        fused stage); None: one with torch ops. `speculator`: speculative decoding's drafts,
        proposed after each step and checked in the next; `verify_graphs`: its verify steps
        captured whole (every request with k + 1 tokens), as `graphs` captures decode steps.
        `token_mask`: the platform's kernel for structured outputs' masks (Platform.token_mask_stage)."""
        self.model = model
        self.backend = backend
        self.kv_caches = kv_caches
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.block_size = block_size
        self.device = device
        max_blocks = (max_model_len + block_size - 1) // block_size
        self.states = RequestStates(max_num_reqs, max_model_len, max_blocks)
        self.sampler = sampler or Sampler()
        self.buffers = buffers
        self.graphs = graphs
        self.piecewise = piecewise
        self.verify_graphs = verify_graphs
        self.token_mask = token_mask
        self._last_step: RunnerStep | None = None  # the latest step that sampled
        self.speculator = speculator
        if speculator is not None:
            speculator.attach(self.states)

    def _update_states(self, sched: SchedulerOutput) -> None:
        self.states.remove(sched.finished_req_ids | sched.preempted_req_ids)
        for new in sched.scheduled_new_reqs:
            self.states.remove({new.req_id})  # a resumed request may still hold a stale row
            self.states.add(new)
        self.states.update_cached(sched.scheduled_cached_reqs)
        for req_id, drafts in sched.scheduled_spec_decode_tokens.items():
            self.states.write_drafts(req_id, drafts)
        if self.speculator is not None:
            if sched.finished_req_ids:
                self.speculator.finish_requests(sched.finished_req_ids)
            if sched.preempted_req_ids:
                self.speculator.reset_requests(sched.preempted_req_ids)

    def execute_model(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        return self.execute_model_async(sched).result()

    @torch.inference_mode()
    def execute_model_async(self, sched: SchedulerOutput) -> RunnerStep:
        """Queue the step's work and return at once; `.result()` waits for its sampled tokens.

        With asynchronous scheduling the engine launches step N+1 before it reads step N's result:
        a request that sampled in step N then gets its next input token from the device, and the
        host learns it when step N's result is read (always before step N+2 is launched)."""
        self._update_states(sched)
        last = self._last_step
        if last is not None and last.has_penalties:
            last.result()  # penalties need every output token on the host (usually already there)
        if sched.total_num_scheduled_tokens == 0:
            return RunnerStep.empty()
        prev_sampled = last.sampled if last is not None and not last.done else None
        req_ids = list(sched.num_scheduled_tokens)
        full, full_size, piecewise_size = self._graph_choice(sched)
        inp = build_model_input(self.states, req_ids, list(sched.num_scheduled_tokens.values()),
                                self.block_size, self.device, self.buffers, full_size, prev_sampled,
                                piecewise_size, sched.scheduled_spec_decode_tokens or None,
                                full.query_len if full is not None else 1)
        hidden = run_forward(self.model, self.backend, self.kv_caches, full, self.piecewise, inp.input_ids,
                             inp.positions, inp.attn_metadata, full_size, piecewise_size)  # [num_tokens, hidden]
        if self.speculator is not None and self.speculator.reads_target_hidden:
            md = inp.attn_metadata
            counts = list(sched.num_scheduled_tokens.values())
            starts = [s - c for s, c in zip(md.seq_lens_cpu, counts)]
            # A step after which nothing is proposed (batch at disable_by_batch_size) keeps no features.
            self.speculator.observe_target(req_ids, starts, counts, hidden, keep=self._speculator_now() is not None)
        output = ModelRunnerOutput(req_ids=req_ids, sampled_token_ids=[[] for _ in req_ids])
        self._compute_prompt_logprobs(inp, hidden, output)
        step = RunnerStep(self.states, output, inp.sample_states, *self._sample(inp, hidden, sched.grammar),
                          self._speculator_now())
        self._last_step = step if inp.sample_states else None
        return step

    def _graph_choice(self, sched: SchedulerOutput) -> tuple[CudaGraphRunner | None, int | None, int | None]:
        """(the full graphs the step replays, their padded batch, or the piecewise graphs' padded
        token count): decode graphs for one token a request, verify graphs for a step whose every
        request checks k drafts."""
        num_tokens, num_reqs = sched.total_num_scheduled_tokens, len(sched.num_scheduled_tokens)
        full = self.graphs
        if sched.scheduled_spec_decode_tokens and num_tokens > num_reqs:
            verify = self.verify_graphs
            uniform = verify is not None and all(n == verify.query_len for n in sched.num_scheduled_tokens.values())
            full = verify if uniform else None
        size, piecewise_size = graph_sizes(full, self.piecewise, num_tokens, num_reqs)
        return (full if size is not None else None), size, piecewise_size

    def _speculator_now(self) -> Speculator | None:
        """What proposes the next drafts after this step; None without speculation or when the
        batch is too large for it (the scheduler would drop the drafts)."""
        spec = self.speculator
        return spec if spec is not None and spec.speculates(len(self.states)) else None

    def _sample(self, inp: ModelInput, hidden: torch.Tensor,
                grammar: GrammarOutput | None) -> tuple[SampledBatch | VerifiedBatch | None, bool]:
        """Launch sampling of the rows that get a token; (their batch or None, any penalties).
        `grammar`: structured outputs' masks of the constrained rows, applied to their logits first."""
        if not inp.sample_states:
            return None, False
        logits = self.model.compute_logits(hidden[inp.logits_indices])  # [num_sampled, vocab]
        if grammar is not None:
            self.token_mask(logits, grammar.bitmask, self._logit_rows(inp, grammar))
        rows = [
            SamplingRequest(s.sampling_params, s.prompt_token_ids, s.output_token_ids, self.eos_token_id,
                            s.num_pending)
            for s in inp.sample_states
        ]
        self.states.mark_sampled(inp.sample_states)
        if inp.drafts is not None:
            assert self.speculator is not None
            verified = self.speculator.verify(logits, rows, inp.drafts, [s.req_id for s in inp.sample_states])
            return verified, any(has_penalty(r.params) for r in rows)
        metadata = make_sampling_metadata(rows, logits.shape[-1], self.device)
        return self.sampler.launch(logits, metadata), metadata.penalties is not None

    @staticmethod
    def _logit_rows(inp: ModelInput, grammar: GrammarOutput) -> list[int]:
        """The logits rows the grammar's bitmask rows mask: each listed request's sampled positions
        (k + 1 in a verify step), in the bitmask's order."""
        first, row = {}, 0
        for i, state in enumerate(inp.sample_states):
            first[state.req_id] = row
            row += 1 + (len(inp.drafts[i]) if inp.drafts is not None else 0)
        return [first[r] + j for r, n in zip(grammar.req_ids, grammar.rows_per_request) for j in range(n)]

    def _compute_prompt_logprobs(self, inp: ModelInput, hidden: torch.Tensor, output: ModelRunnerOutput) -> None:
        for piece in inp.prompt_logprobs:
            rows = hidden[piece.hidden_rows]  # [P, hidden]
            lists = LogprobsLists([], [], [])
            # Logits a chunk at a time: [P, vocab] float32 for a long prompt would be GiBs, more than
            # the memory profile (which sizes the sampler's max_num_seqs rows) set aside.
            for start in range(0, rows.shape[0], _PROMPT_LOGITS_CHUNK):
                end = start + _PROMPT_LOGITS_CHUNK
                logits = self.model.compute_logits(rows[start:end])  # [<= chunk, vocab]
                lists.extend(compute_prompt_logprobs(logits, piece.target_token_ids[start:end], piece.num_logprobs))
            output.prompt_logprobs[piece.req_id] = lists

