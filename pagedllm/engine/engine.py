"""LLMEngine: the offline engine, everything in one process. add_request / step / abort_request."""
from __future__ import annotations

import time
from typing import Any

from pagedllm.config import EngineConfig
from pagedllm.core.request import RequestStatus
from pagedllm.engine.arg_utils import EngineArgs
from pagedllm.engine.core import EngineCore
from pagedllm.engine.frontend import Frontend, load_model_tokenizer
from pagedllm.engine.input_processor import PromptType
from pagedllm.outputs import RequestOutput
from pagedllm.sampling_params import SamplingParams


class LLMEngine:
    """The offline engine: a Frontend and an EngineCore in this process."""

    def __init__(self, config: EngineConfig, executor: str | None = None) -> None:
        self.tokenizer = load_model_tokenizer(config.model_config)
        self.engine_core = EngineCore(config, self.tokenizer.eos_token_id, executor, tokenizer=self.tokenizer)
        self.config = self.engine_core.config  # the final one (KV cache sized)
        self.frontend = Frontend(self.config.model_config, self.tokenizer)
        self.output_processor = self.frontend.output_processor
        # Reached by benchmarks and tests that look inside the engine.
        self.scheduler = self.engine_core.scheduler
        self.executor = self.engine_core.executor
        self.num_blocks = self.engine_core.num_blocks
        self.step_times = self.engine_core.step_times

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> LLMEngine:
        return cls(args.create_engine_config())

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def add_request(self, request_id: str, prompt: PromptType, params: SamplingParams,
                    arrival_time: float | None = None) -> None:
        """Validate and queue a request; raises ValueError on bad input and changes nothing then."""
        for request in self.frontend.make_requests(request_id, prompt, params, arrival_time):
            self.engine_core.add_request(request)

    def abort_request(self, request_ids: str | list[str]) -> None:
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        for request_id in ids:
            children = self.output_processor.abort(request_id)
            self.engine_core.abort_requests(children)

    def step(self) -> list[RequestOutput]:
        core_outs = self.engine_core.step().outputs
        t0 = time.perf_counter()
        outputs, stopped = self.output_processor.process_outputs(core_outs)
        if stopped:  # stop strings are found in text, on this side; the core must let go of them
            self.engine_core.abort_requests(stopped, RequestStatus.FINISHED_STOPPED)
        self.step_times.output += time.perf_counter() - t0
        return outputs

    def has_unfinished_requests(self) -> bool:
        return self.output_processor.has_unfinished_requests()

    def get_num_unfinished_requests(self) -> int:
        return len(self.output_processor.requests)
