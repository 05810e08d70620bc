"""Validates a user's prompt and sampling params and turns them into scheduler Requests."""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pagedllm.config import ModelConfig
from pagedllm.core.request import Request
from pagedllm.sampling_params import SamplingParams

# A prompt: text, token ids, or vLLM's dict forms {"prompt": ...} / {"prompt_token_ids": [...]}.
PromptType = str | list[int] | Mapping[str, Any]


class InputProcessor:
    def __init__(self, tokenizer: Any, model_config: ModelConfig, eos_token_id: int | None,
                 generation_eos_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = model_config.max_model_len
        self.vocab_size = model_config.hf_config.vocab_size
        self.eos_token_id = eos_token_id
        self.generation_eos_ids = [t for t in generation_eos_ids if t != eos_token_id]

    def tokenize(self, prompt: PromptType) -> tuple[str | None, list[int]]:
        """Return (prompt text if any, prompt token ids)."""
        if isinstance(prompt, Mapping):
            if "prompt_token_ids" in prompt:
                return prompt.get("prompt"), self._check_token_ids(prompt["prompt_token_ids"])
            if "prompt" in prompt:
                prompt = prompt["prompt"]
            else:
                raise ValueError("A prompt dict needs 'prompt' or 'prompt_token_ids'.")
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("The prompt is empty.")
            return prompt, self._check_token_ids(self.tokenizer(prompt).input_ids)
        if isinstance(prompt, (list, tuple)):
            return None, self._check_token_ids(prompt)
        raise ValueError(f"Unsupported prompt type {type(prompt).__name__}: give text or a list of token ids.")

    def _check_token_ids(self, token_ids: Any) -> list[int]:
        ids = list(token_ids)
        if not ids:
            raise ValueError("The prompt is empty.")
        if not all(isinstance(t, int) and 0 <= t < self.vocab_size for t in ids):
            raise ValueError(f"Prompt token ids must be integers in [0, {self.vocab_size}), the model's "
                             "vocabulary.")
        return ids

    def make_requests(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                      arrival_time: float | None = None) -> list[Request]:
        """One Request per output sequence (n of them), all sharing the prompt's cached blocks."""
        max_tokens = self._resolve_max_tokens(len(prompt_token_ids), params)
        if params.logit_bias:
            bad = [t for t in params.logit_bias if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(f"logit_bias has token ids outside the vocabulary: {bad[:5]}.")
        if params.structured_outputs is not None:
            from pagedllm.structured_output.grammars import grammar_spec, validate

            validate(grammar_spec(params.structured_outputs))  # a bad schema is the caller's error, now
        stop_ids = set(params.stop_token_ids or [])
        if not params.ignore_eos:
            stop_ids.update(self.generation_eos_ids)
        arrival = time.monotonic() if arrival_time is None else arrival_time
        requests = []
        for i in range(params.n):
            child = params if params.n == 1 else params.clone()
            child.all_stop_token_ids = set(stop_ids)
            if params.n > 1 and params.seed is not None:
                child.seed = params.seed + i  # distinct but reproducible samples per sequence
            child_id = request_id if params.n == 1 else f"{i}_{request_id}"
            requests.append(Request(child_id, prompt_token_ids, child, eos_token_id=self.eos_token_id,
                                    arrival_time=arrival, max_tokens=max_tokens))
        return requests

    def _resolve_max_tokens(self, num_prompt_tokens: int, params: SamplingParams) -> int:
        if num_prompt_tokens >= self.max_model_len:
            raise ValueError(
                f"The prompt is {num_prompt_tokens} tokens long, but the model's context is "
                f"{self.max_model_len} tokens (max_model_len); shorten the prompt."
            )
        room = self.max_model_len - num_prompt_tokens
        if params.max_tokens is None:
            return room
        if params.max_tokens > room:
            raise ValueError(
                f"max_tokens={params.max_tokens} plus the prompt's {num_prompt_tokens} tokens exceeds "
                f"max_model_len={self.max_model_len}; ask for at most {room} tokens."
            )
        return params.max_tokens
