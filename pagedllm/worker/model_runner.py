"""Runs one step: update request states from the scheduler's diff, build inputs, forward, sample."""
from __future__ import annotations

import torch

from pagedllm.attention.base import AttentionBackend
from pagedllm.attention.forward_context import ForwardContext, set_forward_context
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.outputs import LogprobsLists, ModelRunnerOutput
from pagedllm.sample.sampler import Sampler, compute_prompt_logprobs
from pagedllm.sample.sampling_metadata import SamplingRequest, make_sampling_metadata
from pagedllm.worker.input_builder import ModelInput, build_model_input
from pagedllm.worker.request_states import RequestStates


class ModelRunner:
    def __init__(
        self,
        model: torch.nn.Module,
        backend: AttentionBackend,
        kv_caches: list[torch.Tensor],
        *,
        vocab_size: int,
        eos_token_id: int | None,
        block_size: int,
        max_num_reqs: int,
        max_model_len: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self.backend = backend
        self.kv_caches = kv_caches
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.block_size = block_size
        self.device = device
        max_blocks = (max_model_len + block_size - 1) // block_size
        self.states = RequestStates(max_num_reqs, max_model_len, max_blocks)
        self.sampler = Sampler()

    def _update_states(self, sched: SchedulerOutput) -> None:
        self.states.remove(sched.finished_req_ids | sched.preempted_req_ids)
        for new in sched.scheduled_new_reqs:
            self.states.remove({new.req_id})  # a resumed request may still hold a stale row
            self.states.add(new)
        self.states.update_cached(sched.scheduled_cached_reqs)

    @torch.inference_mode()
    def execute_model(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(sched)
        if sched.total_num_scheduled_tokens == 0:
            return ModelRunnerOutput(req_ids=[], sampled_token_ids=[])
        req_ids = list(sched.num_scheduled_tokens)
        inp = build_model_input(self.states, req_ids, list(sched.num_scheduled_tokens.values()),
                                self.block_size, self.device)
        ctx = ForwardContext(inp.attn_metadata, self.kv_caches, self.backend)
        with set_forward_context(ctx):
            hidden = self.model(inp.input_ids, inp.positions)  # [num_tokens, hidden]
        output = ModelRunnerOutput(req_ids=req_ids, sampled_token_ids=[[] for _ in req_ids])
        self._compute_prompt_logprobs(inp, hidden, output)
        self._sample(inp, hidden, output)
        return output

    def _sample(self, inp: ModelInput, hidden: torch.Tensor, output: ModelRunnerOutput) -> None:
        if not inp.sample_states:
            return
        logits = self.model.compute_logits(hidden[inp.logits_indices])  # [num_sampled, vocab]
        rows = [
            SamplingRequest(s.sampling_params, s.prompt_token_ids, s.output_token_ids, self.eos_token_id)
            for s in inp.sample_states
        ]
        metadata = make_sampling_metadata(rows, logits.shape[-1], self.device)
        result = self.sampler.forward(logits, metadata)
        index = {req_id: i for i, req_id in enumerate(inp.req_ids)}
        for state, token_id, logprobs in zip(inp.sample_states, result.sampled_token_ids, result.logprobs):
            self.states.append_sampled(state, token_id)
            output.sampled_token_ids[index[state.req_id]] = [token_id]
            if logprobs is not None:
                output.logprobs[state.req_id] = logprobs

    def _compute_prompt_logprobs(self, inp: ModelInput, hidden: torch.Tensor, output: ModelRunnerOutput) -> None:
        for piece in inp.prompt_logprobs:
            logits = self.model.compute_logits(hidden[piece.hidden_rows])  # [rows, vocab]
            lists: LogprobsLists = compute_prompt_logprobs(logits, piece.target_token_ids, piece.num_logprobs)
            output.prompt_logprobs[piece.req_id] = lists
