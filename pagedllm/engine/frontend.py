"""The text side of an engine, shared by the in-process LLMEngine and the server's AsyncLLM:
tokenizer, prompt/params validation into Requests, and outputs back into text."""
from __future__ import annotations

from typing import Any

from pagedllm.config import ModelConfig
from pagedllm.core.request import Request
from pagedllm.engine.input_processor import InputProcessor, PromptType
from pagedllm.engine.output_processor import OutputProcessor
from pagedllm.sampling_params import SamplingParams


class Frontend:
    def __init__(self, model_config: ModelConfig) -> None:
        from pagedllm.engine.tokenizer import load_tokenizer
        from pagedllm.models.loader import get_generation_eos_ids
        from pagedllm.models.source import ModelSource

        source = ModelSource(model_config.model, model_config.gguf_file)
        self.tokenizer: Any = load_tokenizer(source, model_config.tokenizer)
        self.eos_token_id: int | None = self.tokenizer.eos_token_id
        generation_eos_ids = get_generation_eos_ids(source, model_config.hf_config)
        self.input_processor = InputProcessor(self.tokenizer, model_config, self.eos_token_id, generation_eos_ids)
        self.output_processor = OutputProcessor(self.tokenizer)

    def set_max_model_len(self, max_model_len: int) -> None:
        """Adopt the engine core's context limit, which the worker may have lowered at start-up."""
        self.input_processor.max_model_len = max_model_len

    def make_requests(self, request_id: str, prompt: PromptType, params: SamplingParams,
                      arrival_time: float | None = None) -> list[Request]:
        """Validate a prompt and its params and register it for output processing.

        Returns the scheduler Requests (n of them) to send to the engine core. Raises ValueError on
        bad input, and then nothing is registered."""
        if request_id in self.output_processor.requests:
            raise ValueError(f"Request id {request_id!r} is already in use.")
        text, token_ids = self.input_processor.tokenize(prompt)
        requests = self.input_processor.make_requests(request_id, token_ids, params, arrival_time)
        self.output_processor.add_request(request_id, text, token_ids, [r.request_id for r in requests],
                                          params, requests[0].arrival_time)
        return requests
