"""EngineCore: the scheduler and the executor, one step at a time. No text: the tokenizer is loaded
only for structured outputs' grammars (their token masks), on the first constrained request.

It runs in the caller's process for the offline `LLM` and in its own process behind the server
(engine/core_proc.py). Everything it takes and gives is a plain data type: Requests in,
EngineCoreOutputs out.
"""
from __future__ import annotations

import copy
import logging
import time
from collections import deque
from typing import Any

from pagedllm.config import EngineConfig
from pagedllm.core.request import Request, RequestStatus
from pagedllm.core.scheduler import Scheduler
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.engine.frontend import load_model_tokenizer
from pagedllm.executor.base import get_executor_class
from pagedllm.metrics.stats import StepTimes
from pagedllm.outputs import EngineCoreOutputs, ModelRunnerOutputFuture, SchedulerStats
from pagedllm.reasoning.parsers import reasoning_end_text
from pagedllm.structured_output.manager import StructuredOutputManager

logger = logging.getLogger(__name__)

# The longest a step with nothing to run waits for a grammar's compile before looking again (new
# requests, aborts): short against a step, long against a spin.
_COMPILE_POLL_S = 0.02


class EngineCore:
    def __init__(self, config: EngineConfig, eos_token_id: int | None, executor: str | None = None,
                 tokenizer: Any = None) -> None:
        """`tokenizer`: the caller's, when it has one loaded (the offline engine); else the core
        loads its own for the first constrained request (warm_up_grammars() does it ahead)."""
        start = time.perf_counter()
        # `executor`: a registered name over the config's distributed_executor_backend
        self.executor = get_executor_class(executor or config.parallel_config.distributed_executor_backend)(
            config, eos_token_id)
        plan = self.executor.determine_kv_cache()
        # The final config: the block count, and the context the KV cache fits (the CUDA memory
        # profile may lower a derived max_model_len).
        self.config = config = config.with_kv_cache(plan.num_blocks, plan.max_model_len)
        self.num_blocks = plan.num_blocks
        self.executor.initialize_cache(config)
        model_config = config.model_config
        # A copy of the caller's (taken on the caller's thread): xgrammar reads it on its own thread
        # while the caller detokenizes with the original.
        def grammar_tokenizer() -> Any:
            return copy.deepcopy(tokenizer) if tokenizer is not None else load_model_tokenizer(model_config)

        self.grammars = StructuredOutputManager(grammar_tokenizer, model_config.hf_config.vocab_size,
                                                reasoning_end_text(config.reasoning_parser),
                                                load_on_caller=tokenizer is not None)
        self.scheduler = Scheduler(config.scheduler_config, config.cache_config, self.num_blocks,
                                   config.speculative_config, self.grammars)
        self.step_times = StepTimes()
        self.async_scheduling = config.scheduler_config.async_scheduling
        # Speculative decoding on a GPU: scheduling stays synchronous (each step's drafts come from
        # the tokens of the step before), but the caller's output stage overlaps the next step.
        self.pipelined = (not self.async_scheduling and config.speculative_config is not None
                          and config.device_config.device == "cuda")
        # Steps launched and not yet read back, oldest first (at most two: asynchronous scheduling).
        self._in_flight: deque[tuple[SchedulerOutput, ModelRunnerOutputFuture]] = deque()
        self.num_requests_received = 0
        logger.info("Engine core ready in %.1f s: up to %d requests at once, %d tokens a step, max_model_len %d",
                    time.perf_counter() - start, config.scheduler_config.max_num_seqs,
                    config.scheduler_config.max_num_batched_tokens, config.model_config.max_model_len)

    def warm_up_grammars(self) -> None:
        """Prepare structured outputs' compiler in the background (the tokenizer's vocabulary read
        once), so the first constrained request waits only for its own grammar (a long-running server)."""
        self.grammars.warm_up()

    def add_request(self, request: Request) -> None:
        """Queue a validated request; raises ValueError if it can never fit."""
        self.num_requests_received += 1  # refused or not, it is no longer in transit
        if request.sampling_params.structured_outputs is not None:
            self.grammars.add_request(request)  # compiles meanwhile; the request waits for it
        try:
            self.scheduler.add_request(request)
        except ValueError:
            if request.structured is not None:
                self.grammars.release(request)
            raise

    def abort_requests(self, request_ids: list[str],
                       status: RequestStatus = RequestStatus.FINISHED_ABORTED) -> None:
        """Finish requests now and free their blocks (unknown or finished ids are ignored)."""
        self.scheduler.finish_requests(request_ids, status)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests() or bool(self._in_flight)

    def step(self) -> EngineCoreOutputs:
        outputs = self._step()
        errors = self.scheduler.take_errors()
        if errors:
            outputs.errors = {**(outputs.errors or {}), **errors}
        return outputs

    def _step(self) -> EngineCoreOutputs:
        if self.async_scheduling:
            if not self.grammars.num_active:
                return self._step_async()
            if self._in_flight:  # constrained requests step synchronously: drain first
                return self._read_in_flight()
        if self.pipelined:
            return self._step_pipelined()
        t0 = time.perf_counter()
        sched_out = self._schedule()
        t1 = time.perf_counter()
        runner_out = self.executor.execute_model(sched_out)
        t2 = time.perf_counter()
        outputs = self.scheduler.update_from_output(sched_out, runner_out)
        t3 = time.perf_counter()
        # The output stage is timed by whoever turns these outputs into text.
        self.step_times.record(len(sched_out.num_scheduled_tokens), t0, t1, t2, t3, t3)
        return EngineCoreOutputs(outputs)

    def _schedule(self) -> SchedulerOutput:
        """The scheduler's next step, with the token masks of its constrained requests. (Their
        matchers need the previous step's tokens, so constrained requests step synchronously.)"""
        sched_out = self.scheduler.schedule()
        if self.grammars.num_active:
            if sched_out.is_empty:  # only constrained requests waiting for their grammars
                self.grammars.wait_for_compile(_COMPILE_POLL_S)
            sched_out.grammar = self.grammars.bitmask_for(sched_out, self.scheduler.requests)
        return sched_out

    def _read_in_flight(self) -> EngineCoreOutputs:
        """The oldest step in flight, read and applied (asynchronous steps drained one by one)."""
        prev_out, future = self._in_flight.popleft()
        return EngineCoreOutputs(self.scheduler.update_from_output(prev_out, future.result()))

    def _step_async(self) -> EngineCoreOutputs:
        """Launch step N+1, then read step N's result: the host schedules and prepares step N+1
        while the device still runs step N. Returns step N's outputs (none on the first step)."""
        t0 = t1 = t2 = time.perf_counter()
        launched = False
        if self.scheduler.has_unfinished_requests():
            sched_out = self.scheduler.schedule()
            t1 = time.perf_counter()
            future = self.executor.execute_model_async(sched_out)  # an empty step still drops finished rows
            t2 = time.perf_counter()
            launched = not sched_out.is_empty
            if launched or not self._in_flight:  # an empty one is read at once for its pending outputs
                self._in_flight.append((sched_out, future))
        # Keep one step queued behind the running one; with nothing new to queue, drain.
        if not self._in_flight or (launched and len(self._in_flight) < 2):
            self.step_times.schedule += t1 - t0
            self.step_times.execute += t2 - t1
            return EngineCoreOutputs([])
        prev_out, future = self._in_flight.popleft()
        runner_out = future.result()
        t3 = time.perf_counter()
        outputs = self.scheduler.update_from_output(prev_out, runner_out)
        t4 = time.perf_counter()
        # "execute" is launching step N+1 plus waiting for step N; "update" applies step N's result.
        self.step_times.record(len(prev_out.num_scheduled_tokens), t0, t1, t3, t4, t4)
        return EngineCoreOutputs(outputs)

    def _step_pipelined(self) -> EngineCoreOutputs:
        """Synchronous scheduling one step ahead of the output stage: read step N's result and
        apply it, schedule and launch step N+1 at once, and only then hand step N's outputs to the
        caller, whose output stage (detokenising, streaming, the server's messages) runs while the
        device works on step N+1. What is scheduled is exactly what synchronous stepping schedules."""
        t0 = t1 = t2 = time.perf_counter()
        outputs = []
        read = self._in_flight.popleft() if self._in_flight else None
        if read is not None:
            runner_out = read[1].result()
            t1 = time.perf_counter()
            outputs = self.scheduler.update_from_output(read[0], runner_out)
            t2 = time.perf_counter()
        if self.scheduler.has_unfinished_requests():
            t3 = time.perf_counter()
            sched_out = self._schedule()
            t4 = time.perf_counter()
            future = self.executor.execute_model_async(sched_out)
            self.step_times.schedule += t4 - t3
            self.step_times.execute += time.perf_counter() - t4
            if sched_out.is_empty:  # nothing runs: its pending outputs (if any) go out now
                outputs += self.scheduler.update_from_output(sched_out, future.result())
            else:
                self._in_flight.append((sched_out, future))
        if read is not None:
            # "execute" is the wait for step N; "update" applies its result.
            self.step_times.record(len(read[0].num_scheduled_tokens), t0, t0, t1, t2, t2)
        return EngineCoreOutputs(outputs)

    def set_async_scheduling(self, enabled: bool) -> None:
        """Switch scheduling mode between steps (benchmarks compare both on one loaded engine).
        Steps in flight are read first; their outputs go nowhere, so call it while idle."""
        if enabled and self.config.speculative_config is not None:
            raise ValueError("Asynchronous scheduling does not run with speculative decoding.")
        while self._in_flight:
            self._step_async()
        self.async_scheduling = self.scheduler.async_scheduling = enabled

    def make_stats(self) -> SchedulerStats:
        sched = self.scheduler
        kv = sched.kv_cache_manager
        return SchedulerStats(
            num_running=sched.num_running,
            num_waiting=sched.num_waiting,
            kv_cache_usage=kv.usage,
            num_blocks=self.num_blocks,
            num_free_blocks=kv.num_free_blocks,
            prefix_cache_queries=kv.prefix_cache_queries,
            prefix_cache_hits=kv.prefix_cache_hits,
            num_preemptions=sched.num_preemptions,
            num_requests_received=self.num_requests_received,
            spec_decoding=sched.spec_decoding_stats.copy() if sched.spec_decoding_stats is not None else None,
        )

    def shutdown(self) -> None:
        self.grammars.shutdown()
        self.executor.shutdown()
