"""The text side of an engine, shared by the in-process LLMEngine and the server's AsyncLLM:
tokenizer, prompt/params validation into Requests, and outputs back into text.

It is built from the engine's final config (after start-up sized the KV cache), so the context
limit it validates against is the one the engine core runs with.
"""
from __future__ import annotations

from typing import Any

from pagedllm.config import ModelConfig
from pagedllm.core.request import Request
from pagedllm.engine.input_processor import InputProcessor, PromptType
from pagedllm.engine.output_processor import OutputProcessor
from pagedllm.sampling_params import SamplingParams


def load_model_tokenizer(model_config: ModelConfig) -> Any:
    """The tokenizer of the model (or of model_config.tokenizer when set)."""
    from pagedllm.engine.tokenizer import load_tokenizer
    from pagedllm.models.source import ModelSource

    return load_tokenizer(ModelSource(model_config.model, model_config.gguf_file), model_config.tokenizer)


class Frontend:
    def __init__(self, model_config: ModelConfig, tokenizer: Any) -> None:
        """model_config: the engine's final one; tokenizer: from load_model_tokenizer."""
        from pagedllm.models.loader import get_generation_eos_ids
        from pagedllm.models.source import ModelSource

        source = ModelSource(model_config.model, model_config.gguf_file)
        self.tokenizer = tokenizer
        self.eos_token_id: int | None = tokenizer.eos_token_id
        generation_eos_ids = get_generation_eos_ids(source, model_config.hf_config)
        self.input_processor = InputProcessor(tokenizer, model_config, self.eos_token_id, generation_eos_ids)
        self.output_processor = OutputProcessor(tokenizer)

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
