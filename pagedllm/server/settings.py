"""The HTTP layer's own settings (the engine's are the engine's business)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pagedllm.generation_config import SamplingDefaults


@dataclass(frozen=True)
class ServerSettings:
    # Names clients may put in `model`; the first is reported back. Empty: the engine's model path.
    served_model_names: list[str] = field(default_factory=list)
    # When set, every endpoint but /health needs `Authorization: Bearer <api_key>`.
    api_key: str | None = None
    # When set, a generation request gets a 503 if it would leave more than this many sequences
    # (prompts x n) waiting for a slot in the engine.
    max_waiting_requests: int | None = None
    # What requests get for the sampling parameters they leave unset (--generation-config).
    sampling_defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    # Bodies larger than this get a 413. 32 MiB holds a 1M-token context as token ids (~8 MB of JSON)
    # or as text in any JSON escaping, with room for a batch of prompts; it stops a client from making
    # the server parse (and hold) hundreds of MB of JSON, about 10x the bytes in Python objects.
    max_request_body_bytes: int = 32 << 20
    # A body not fully received this many seconds after the request began gets a 408 and the
    # connection is closed: a client that announces more than it sends must not hold one for ever.
    # 60 s (nginx's client_body_timeout) reads a full 32 MiB body at 0.6 MB/s.
    request_body_timeout_s: float = 60.0
    # Split chat completions' text into reasoning_content and content (pagedllm/reasoning: qwen3,
    # deepseek_r1); None: all content.
    reasoning_parser: str | None = None
    # Tool calls in chat completions (pagedllm/tool_calls): the parser of the model's format, and
    # whether tool_choice "auto" parses with it ("required" and named functions need neither).
    tool_call_parser: str | None = None
    enable_auto_tool_choice: bool = False

    def __post_init__(self) -> None:
        if any(not name for name in self.served_model_names):
            raise ValueError("served_model_names must be non-empty strings.")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be non-empty when given.")
        if self.max_request_body_bytes < 1 or not self.request_body_timeout_s > 0:
            raise ValueError("max_request_body_bytes and request_body_timeout_s must be positive.")
        if self.max_waiting_requests is not None and self.max_waiting_requests < 0:
            raise ValueError(f"max_waiting_requests must be >= 0, got {self.max_waiting_requests}.")
        if self.reasoning_parser is not None:
            from pagedllm.reasoning.parsers import REASONING_PARSERS

            REASONING_PARSERS.check(self.reasoning_parser)
        if self.tool_call_parser is not None:
            from pagedllm.tool_calls import TOOL_PARSERS

            TOOL_PARSERS.check(self.tool_call_parser)
        if self.enable_auto_tool_choice and self.tool_call_parser is None:
            raise ValueError("--enable-auto-tool-choice needs --tool-call-parser (supported: hermes, llama3_json, "
                             "mistral, pythonic).")
