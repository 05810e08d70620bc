"""LLMEngine: puts the stages of a step in order. add_request / step / abort_request."""
from __future__ import annotations

import time
from typing import Any

from pagedllm.config import EngineConfig
from pagedllm.core.request import RequestStatus
from pagedllm.core.scheduler import Scheduler
from pagedllm.engine.arg_utils import EngineArgs
from pagedllm.engine.input_processor import InputProcessor, PromptType
from pagedllm.engine.output_processor import OutputProcessor
from pagedllm.executor.base import get_executor_class
from pagedllm.metrics.stats import StepTimes
from pagedllm.models.source import ModelSource
from pagedllm.outputs import RequestOutput
from pagedllm.sampling_params import SamplingParams

class LLMEngine:
    def __init__(self, config: EngineConfig, executor: str = "uniproc") -> None:
        from pagedllm.engine.tokenizer import load_tokenizer
        from pagedllm.models.loader import get_generation_eos_ids

        self.config = config
        mc = config.model_config
        source = ModelSource(mc.model, mc.gguf_file)
        self.tokenizer = load_tokenizer(source, mc.tokenizer)
        eos_token_id = self.tokenizer.eos_token_id
        generation_eos_ids = get_generation_eos_ids(source, mc.hf_config)
        self.input_processor = InputProcessor(self.tokenizer, mc, eos_token_id, generation_eos_ids)
        self.output_processor = OutputProcessor(self.tokenizer)
        self.executor = get_executor_class(executor)(config, eos_token_id)
        self.num_blocks = self.executor.initialize()
        self.scheduler = Scheduler(config.scheduler_config, config.cache_config, self.num_blocks)
        self.step_times = StepTimes()

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> "LLMEngine":
        return cls(args.create_engine_config())

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def add_request(self, request_id: str, prompt: PromptType, params: SamplingParams,
                    arrival_time: float | None = None) -> None:
        """Validate and queue a request; raises ValueError on bad input and changes nothing then."""
        if request_id in self.output_processor.requests:
            raise ValueError(f"Request id {request_id!r} is already in use.")
        text, token_ids = self.input_processor.tokenize(prompt)
        requests = self.input_processor.make_requests(request_id, token_ids, params, arrival_time)
        self.output_processor.add_request(request_id, text, token_ids, [r.request_id for r in requests],
                                          params, requests[0].arrival_time)
        for request in requests:
            self.scheduler.add_request(request)

    def abort_request(self, request_ids: str | list[str]) -> None:
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        for request_id in ids:
            children = self.output_processor.abort(request_id)
            self.scheduler.finish_requests(children, RequestStatus.FINISHED_ABORTED)

    def step(self) -> list[RequestOutput]:
        t0 = time.perf_counter()
        sched_out = self.scheduler.schedule()
        t1 = time.perf_counter()
        runner_out = self.executor.execute_model(sched_out)
        t2 = time.perf_counter()
        core_outs = self.scheduler.update_from_output(sched_out, runner_out)
        t3 = time.perf_counter()
        outputs, stopped = self.output_processor.process_outputs(core_outs)
        if stopped:
            self.scheduler.finish_requests(stopped, RequestStatus.FINISHED_STOPPED)
        self.step_times.record(len(sched_out.num_scheduled_tokens), t0, t1, t2, t3, time.perf_counter())
        return outputs

    def has_unfinished_requests(self) -> bool:
        return self.output_processor.has_unfinished_requests()

    def get_num_unfinished_requests(self) -> int:
        return len(self.output_processor.requests)
