"""Pydantic models of the OpenAI API (and vLLM's extras) as this server speaks it.

Requests know how to become `SamplingParams`; responses serialize to exactly the JSON OpenAI sends.
Fields the server does not implement (tools, response_format, suffix, best_of != n) are refused
with a 400 instead of being silently ignored, so a client never gets quietly wrong behaviour.
"""
from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_serializer

from pagedllm.generation_config import SamplingDefaults
from pagedllm.sampling_params import RequestOutputKind, SamplingParams
from pagedllm.server.errors import bad_request, context_length_exceeded

MAX_N = 128  # more sequences per request than this is a denial of service, not a use case
MAX_LOGPROBS = 20  # OpenAI's chat limit; vLLM's default max_logprobs
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions (vLLM's too)
NEUTRAL = SamplingDefaults()  # the API's own defaults (no generation config)

# Integers cross to the engine-core process as msgpack int64, and torch takes a signed 64-bit seed:
# a larger value must be refused here, not fail (or crash) later.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
TokenId = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]


def _encodable(text: str) -> str:
    # JSON's "\ud800" escapes decode to lone surrogates, which no tokenizer (nor msgpack) can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]  # every string that reaches a tokenizer or the engine


class OpenAIBaseModel(BaseModel):
    # NaN / inf slip through range checks (every comparison is False), so refuse them at parse time.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = False


class _SamplingRequest(OpenAIBaseModel):
    """Fields shared by completions and chat completions."""

    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: Int64 | None = None
    stop: Text | list[Text] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's extras
    top_k: Int64 | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: Int64 = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[TokenId] | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def check_stream_options(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options can only be given when stream is true.", "stream_options")

    def _logit_bias(self) -> dict[int, float] | None:
        if not self.logit_bias:
            return None
        bias = {}
        for key, value in self.logit_bias.items():
            try:
                token_id = int(key)
            except ValueError:
                raise bad_request(f"logit_bias keys must be token ids, got {key!r}.", "logit_bias") from None
            if not 0 <= token_id < 2**63 or not -100.0 <= value <= 100.0:
                raise bad_request("logit_bias maps token ids >= 0 to values in [-100, 100].", "logit_bias")
            bias[token_id] = value
        return bias

    def _make_params(self, max_tokens: int | None, logprobs: int | None, num_prompt_tokens: int,
                     max_model_len: int, prompt_param: str, defaults: SamplingDefaults) -> SamplingParams:
        """`defaults` fill what the request leaves unset (the model's generation config, or neutral)."""
        max_tokens = _resolve_max_tokens(max_tokens, defaults.max_tokens, num_prompt_tokens, max_model_len,
                                         prompt_param)
        kind = RequestOutputKind.DELTA if self.stream else RequestOutputKind.FINAL_ONLY
        try:
            return SamplingParams(
                n=self.n, temperature=_or(self.temperature, defaults.temperature),
                top_p=_or(self.top_p, defaults.top_p),
                presence_penalty=_or(self.presence_penalty, 0.0),
                frequency_penalty=_or(self.frequency_penalty, 0.0),
                repetition_penalty=_or(self.repetition_penalty, defaults.repetition_penalty),
                top_k=_or(self.top_k, defaults.top_k), min_p=_or(self.min_p, defaults.min_p), seed=self.seed,
                stop=self.stop, stop_token_ids=self.stop_token_ids,
                ignore_eos=self.ignore_eos, max_tokens=max_tokens, min_tokens=self.min_tokens,
                logprobs=logprobs, skip_special_tokens=self.skip_special_tokens,
                spaces_between_special_tokens=self.spaces_between_special_tokens,
                include_stop_str_in_output=self.include_stop_str_in_output, logit_bias=self._logit_bias(),
                output_kind=kind,
            )
        except ValueError as e:
            raise bad_request(str(e)) from None


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _resolve_max_tokens(requested: int | None, default: int | None, num_prompt_tokens: int, max_model_len: int,
                        prompt_param: str) -> int | None:
    """When not given: the default (the generation config's) or what is left of the context, whichever
    is smaller; a 400 when the request cannot fit."""
    room = max_model_len - num_prompt_tokens
    if room <= 0:
        raise context_length_exceeded(
            f"This model's maximum context length is {max_model_len} tokens (max_model_len), but the "
            f"prompt has {num_prompt_tokens} tokens; shorten it.", prompt_param)
    if requested is None:
        return room if default is None else min(default, room)
    if requested > room:
        raise context_length_exceeded(
            f"max_tokens={requested} is too large: this model's maximum context length is {max_model_len} "
            f"tokens and the prompt has {num_prompt_tokens}, so at most {room} can be generated.", "max_tokens")
    return requested


# ---------------------------------------------------------------------------------------- completions


class CompletionRequest(_SamplingRequest):
    prompt: Text | list[Text] | list[TokenId] | list[list[TokenId]]
    max_tokens: Int64 | None = COMPLETION_DEFAULT_MAX_TOKENS
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    best_of: int | None = None
    suffix: str | None = None

    def check_supported(self) -> None:
        self.check_stream_options()
        if self.best_of is not None and self.best_of != self.n:
            raise bad_request("best_of is not supported (only best_of == n).", "best_of")
        if self.suffix:
            raise bad_request("suffix is not supported.", "suffix")

    def to_sampling_params(self, num_prompt_tokens: int, max_model_len: int,
                           defaults: SamplingDefaults = NEUTRAL) -> SamplingParams:
        # Not sent: the generation config's max_tokens when it has one, else OpenAI's default of 16.
        unset = "max_tokens" not in self.model_fields_set and defaults.max_tokens is not None
        params = self._make_params(None if unset else self.max_tokens, self.logprobs, num_prompt_tokens,
                                   max_model_len, "prompt", defaults)
        if self.echo and self.logprobs is not None:  # echoed prompt tokens come with their logprobs
            params.prompt_logprobs = self.logprobs
        return params


class CompletionLogprobs(OpenAIBaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> UsageInfo:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


class CompletionChoice(OpenAIBaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None  # vLLM's extra: the stop token id or string that ended it


class CompletionResponse(OpenAIBaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None


class CompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


# --------------------------------------------------------------------------------------------- chat


class TextContentPart(OpenAIBaseModel):
    type: Literal["text"]
    text: Text


class ChatMessage(OpenAIBaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextContentPart] | None = None
    name: str | None = None

    def to_template_dict(self) -> dict[str, str]:
        """The plain {role, content} a chat template expects; text parts are joined by newlines
        (as vLLM does) and OpenAI's newer "developer" role is the templates' "system"."""
        text = "\n".join(part.text for part in self.content) if isinstance(self.content, list) else self.content or ""
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Int64 | None = None
    max_completion_tokens: Int64 | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    # vLLM's chat-template extras
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    def check_supported(self) -> None:
        self.check_stream_options()
        if self.tools or self.functions:
            raise bad_request("Tool and function calling are not supported.", "tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise bad_request("Only response_format {'type': 'text'} is supported.", "response_format")
        if self.top_logprobs and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs set to true.", "top_logprobs")
        if self.add_generation_prompt and self.continue_final_message:
            raise bad_request("add_generation_prompt and continue_final_message cannot both be true.")

    def to_sampling_params(self, num_prompt_tokens: int, max_model_len: int,
                           defaults: SamplingDefaults = NEUTRAL) -> SamplingParams:
        max_tokens = _or(self.max_completion_tokens, self.max_tokens)
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return self._make_params(max_tokens, logprobs, num_prompt_tokens, max_model_len, "messages", defaults)


class ChatTopLogprob(OpenAIBaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob] = Field(default_factory=list)


class ChatLogprobs(OpenAIBaseModel):
    content: list[ChatTokenLogprob] | None = None


class ChatResponseMessage(OpenAIBaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(OpenAIBaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None


class DeltaMessage(OpenAIBaseModel):
    role: str | None = None
    content: str | None = None

    @model_serializer
    def _drop_absent(self) -> dict[str, Any]:
        # OpenAI's deltas carry only what changed: {"role": ...} first, then {"content": ...}, then {}.
        return {k: v for k, v in (("role", self.role), ("content", self.content)) if v is not None}


class ChatStreamChoice(OpenAIBaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatStreamChoice]
    usage: UsageInfo | None = None


# ------------------------------------------------------------------------------- models, tokenize, errors


class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "pagedllm"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeRequest(OpenAIBaseModel):
    """Either `prompt` (text, special tokens added by default) or `messages` (rendered through the
    chat template, whose text already holds the special tokens)."""

    model: str | None = None
    prompt: Text | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    return_token_strs: bool = False


class TokenizeResponse(OpenAIBaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    tokens: list[TokenId]


class DetokenizeResponse(OpenAIBaseModel):
    prompt: str


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(OpenAIBaseModel):
    error: ErrorInfo
