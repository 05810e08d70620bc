"""Pydantic models of the OpenAI API's requests (and vLLM's extras) as this server takes them.

Requests know how to become `SamplingParams` (responses are in protocol_responses.py). They are
validated strictly, as OpenAI does: a string is never a number (`"max_tokens": "4"` is a 400), and
every bound the engine enforces that JSON schema can express is in the model, so the OpenAPI
document says what the server accepts. Fields we do not implement are refused or logged by
`extra_fields.py`; bounds known only at runtime (the vocabulary, the context) are checked by the
handlers and put in the OpenAPI document by `openapi.py`.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from pagedllm.generation_config import SamplingDefaults
from pagedllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams
from pagedllm.server.errors import OpenAIError, bad_request, context_length_exceeded
from pagedllm.server.extra_fields import (
    CHAT_UNSUPPORTED,
    COMPLETION_UNSUPPORTED,
    TEMPLATE_UNSUPPORTED,
    Unsupported,
    check_extra_fields,
    document,
)

MAX_N = 128  # more sequences per request than this is a denial of service, not a use case
MAX_LOGPROBS = 20  # OpenAI's chat limit; vLLM's default max_logprobs
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions (vLLM's too)
NEUTRAL = SamplingDefaults()  # the API's own defaults (no generation config)
INT64_MAX = 2**63 - 1


def _whole_number(value: Any) -> Any:
    # JSON has one number type: 2.0 is the integer 2 to JSON schema (and to JavaScript, which writes
    # it "2"), so it is taken where an integer is expected; 2.5, "2" and true are not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# After the bounds in each Annotated, so that they stay in the integer's JSON schema.
_WHOLE = BeforeValidator(_whole_number)
# Integers cross to the engine-core process as msgpack int64, and torch takes a signed 64-bit seed:
# a larger value must be refused here, not fail (or crash) later.
Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX), _WHOLE]
# Below the vocabulary size too, which only the running server knows (serving_common checks it,
# openapi.py writes it in).
TokenId = Annotated[int, Field(ge=0, le=INT64_MAX, json_schema_extra={"x-token-id": True}), _WHOLE]
# Token counts: below the context too (the same two places).
_COUNT: dict[str, Any] = {"x-token-count": True}
MaxTokens = Annotated[int, Field(ge=1, le=INT64_MAX, json_schema_extra=_COUNT), _WHOLE]
MinTokens = Annotated[int, Field(ge=0, le=INT64_MAX, json_schema_extra=_COUNT), _WHOLE]
NumLogprobs = Annotated[int, Field(ge=0, le=MAX_LOGPROBS), _WHOLE]
# logit_bias keys: a token id written in decimal, nothing else (int() would take " 12 " and "١٢").
TokenIdKey = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]*)$", json_schema_extra={"x-token-id": True})]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _encodable(text: str) -> str:
    # JSON's "\ud800" escapes decode to lone surrogates, which no tokenizer (nor msgpack) can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]  # every string that reaches a tokenizer or the engine
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(_encodable)]
# A completions prompt: text, token ids, or a batch of either; nothing in it empty.
Prompt = (NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)]
          | Annotated[list[TokenId], Field(min_length=1)]
          | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)])


class OpenAIBaseModel(BaseModel):
    # NaN / inf slip through range checks (every comparison is False), so refuse them at parse time.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class StrictModel(OpenAIBaseModel):
    """What clients send: no coercion (a string is never a number or a boolean; an int fills a float)."""

    model_config = ConfigDict(strict=True)


def _document(schema: dict[str, Any], cls: type[Any]) -> None:
    document(schema, cls.UNSUPPORTED)
    if cls.RULES:
        schema["allOf"] = list(cls.RULES)


def _never(**properties: Any) -> dict[str, Any]:
    """A JSON schema clause: never all of these at once (the first is present; the others, when
    absent, count as their defaults)."""
    return {"not": {"required": [next(iter(properties))], "properties": properties}}


Rules = tuple[dict[str, Any], ...]
# What the handlers refuse across fields, as JSON schema (OpenAI's rules, vLLM's for its extras).
STREAM_OPTIONS_NEED_STREAM = _never(stream_options={"type": "object"}, stream={"not": {"const": True}})
TOP_LOGPROBS_NEED_LOGPROBS = _never(top_logprobs={"type": "integer", "minimum": 1}, logprobs={"not": {"const": True}})
TEMPLATE_FLAGS_EXCLUSIVE = _never(continue_final_message={"const": True}, add_generation_prompt={"const": True})
PROMPT_OR_MESSAGES = {"oneOf": [{"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
                                {"required": ["messages"], "properties": {"messages": {"type": "array"}}}]}


class OpenAIRequest(StrictModel):
    """A request body. Unknown fields are kept (in `model_extra`) for `check_extra_fields`."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_document)
    UNSUPPORTED: ClassVar[dict[str, Unsupported]] = {}
    RULES: ClassVar[Rules] = ()  # JSON schema clauses the handlers check
    ENDPOINT: ClassVar[str] = ""

    def check_extra_fields(self) -> None:
        check_extra_fields(self.model_extra or {}, self.UNSUPPORTED, self.ENDPOINT)


class StreamOptions(StrictModel):
    include_usage: bool | None = False


_CONSTRAINT = ("at most one structured output constraint a request (response_format, structured_outputs, "
               "a guided_* field, or tool_choice 'required' or naming a function), a valid one, and no min_tokens "
               "beside it (the constraint decides the length)")


class JsonSchemaFormat(StrictModel):
    name: str = Field(max_length=64)
    schema_: dict[str, Any] = Field(alias="schema", description="a valid JSON schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(StrictModel):
    """OpenAI's: text (no constraint), json_object (any JSON object) or json_schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputsRequest(StrictModel):
    """vLLM's `structured_outputs` extra: one of these (SamplingParams' StructuredOutputsParams)."""

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: NonEmptyText | None = None
    choice: Annotated[list[NonEmptyText], Field(min_length=1)] | None = None
    grammar: NonEmptyText | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False


class _SamplingRequest(OpenAIRequest):
    """Fields shared by completions and chat completions."""

    RULES: ClassVar[Rules] = (STREAM_OPTIONS_NEED_STREAM,)

    model: str | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N), _WHOLE] = 1
    temperature: Annotated[float, Field(ge=0.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[TokenIdKey, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    seed: Int64 | None = None
    stop: NonEmptyText | list[NonEmptyText] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's extras
    top_k: Annotated[int, Field(ge=-1, le=INT64_MAX), _WHOLE] | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=2.0)] | None = None
    min_tokens: MinTokens = 0
    ignore_eos: bool = False
    stop_token_ids: list[TokenId] | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    # Structured outputs: OpenAI's response_format, vLLM's structured_outputs and its older guided_*
    response_format: ResponseFormat | None = Field(None, description=_CONSTRAINT)
    structured_outputs: StructuredOutputsRequest | None = Field(None, description=f"exactly one field; {_CONSTRAINT}")
    guided_json: dict[str, Any] | str | None = Field(None, description=_CONSTRAINT)
    guided_regex: NonEmptyText | None = Field(None, description=_CONSTRAINT)
    guided_choice: Annotated[list[NonEmptyText], Field(min_length=1)] | None = Field(None, description=_CONSTRAINT)
    guided_grammar: NonEmptyText | None = Field(None, description=_CONSTRAINT)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def check_supported(self) -> None:
        self.check_extra_fields()
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options can only be given when stream is true.", "stream_options")

    def token_ids(self) -> dict[str, list[int]]:
        """The token ids other than the prompt's, by field, for the vocabulary check."""
        return {"stop_token_ids": list(self.stop_token_ids or []),
                "logit_bias": [int(key) for key in self.logit_bias or {}]}

    def token_counts(self) -> dict[str, int | None]:
        """The token counts, by field, for the context check."""
        return {"min_tokens": self.min_tokens}

    def _make_params(self, max_tokens: int | None, logprobs: int | None, num_prompt_tokens: int,
                     max_model_len: int, prompt_param: str, defaults: SamplingDefaults,
                     tool_constraint: StructuredOutputsParams | None = None) -> SamplingParams:
        """`defaults` fill what the request leaves unset (the model's generation config, or neutral)."""
        max_tokens = _resolve_max_tokens(max_tokens, defaults.max_tokens, num_prompt_tokens, max_model_len,
                                         prompt_param)
        kind = RequestOutputKind.DELTA if self.stream else RequestOutputKind.FINAL_ONLY
        logit_bias = {int(key): value for key, value in self.logit_bias.items()} if self.logit_bias else None
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
                include_stop_str_in_output=self.include_stop_str_in_output, logit_bias=logit_bias,
                output_kind=kind, structured_outputs=self._structured_outputs(tool_constraint),
            )
        except ValueError as e:
            raise bad_request(str(e)) from None

    def _structured_outputs(self, tool_constraint: StructuredOutputsParams | None) -> StructuredOutputsParams | None:
        """The constraint the request asks for, from whichever of its fields gives one (at most one)."""
        given: dict[str, StructuredOutputsParams] = {}
        if tool_constraint is not None:
            given["tool_choice"] = tool_constraint
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_object":
            given["response_format"] = StructuredOutputsParams(json_object=True)
        elif fmt is not None and fmt.type == "json_schema":
            if fmt.json_schema is None:
                raise bad_request("response_format of type json_schema needs json_schema.schema.", "response_format")
            given["response_format"] = StructuredOutputsParams(json=fmt.json_schema.schema_)
        if self.structured_outputs is not None:
            so = self.structured_outputs
            given["structured_outputs"] = StructuredOutputsParams(
                json=so.json_, regex=so.regex, choice=so.choice, grammar=so.grammar, json_object=so.json_object,
                disable_any_whitespace=so.disable_any_whitespace)
        for name, key in (("guided_json", "json"), ("guided_regex", "regex"), ("guided_choice", "choice"),
                          ("guided_grammar", "grammar")):
            value = getattr(self, name)
            if value is not None:
                given[name] = StructuredOutputsParams(**{key: value})
        if len(given) > 1:
            raise bad_request(f"Only one structured output constraint at a time, got {', '.join(given)}.",
                              next(iter(given)))
        return next(iter(given.values()), None)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def prompt_too_long(num_prompt_tokens: int, max_model_len: int, prompt_param: str) -> OpenAIError:
    return context_length_exceeded(
        f"This model's maximum context length is {max_model_len} tokens (max_model_len), but the "
        f"prompt has {num_prompt_tokens} tokens; shorten it.", prompt_param)


def _resolve_max_tokens(requested: int | None, default: int | None, num_prompt_tokens: int, max_model_len: int,
                        prompt_param: str) -> int | None:
    """When not given: the default (the generation config's) or what is left of the context, whichever
    is smaller; a 400 when the request cannot fit."""
    room = max_model_len - num_prompt_tokens
    if room <= 0:
        raise prompt_too_long(num_prompt_tokens, max_model_len, prompt_param)
    if requested is None:
        return room if default is None else min(default, room)
    if requested > room:
        raise context_length_exceeded(
            f"max_tokens={requested} is too large: this model's maximum context length is {max_model_len} "
            f"tokens and the prompt has {num_prompt_tokens}, so at most {room} can be generated.", "max_tokens")
    return requested


# ---------------------------------------------------------------------------------------- completions


class CompletionRequest(_SamplingRequest):
    UNSUPPORTED = COMPLETION_UNSUPPORTED
    ENDPOINT = "completions"

    prompt: Prompt
    max_tokens: MaxTokens | None = Field(COMPLETION_DEFAULT_MAX_TOKENS,
                                         description="null, like leaving it out, means 16 (OpenAI's default)")
    echo: bool = False
    logprobs: NumLogprobs | None = None

    @field_validator("max_tokens")
    @classmethod
    def _null_is_the_default(cls, value: int | None) -> int:
        # OpenAI's legacy completions: an explicit null is the default, not "the rest of the context".
        return COMPLETION_DEFAULT_MAX_TOKENS if value is None else value

    def token_counts(self) -> dict[str, int | None]:
        return {**super().token_counts(), "max_tokens": self.max_tokens}

    def to_sampling_params(self, num_prompt_tokens: int, max_model_len: int,
                           defaults: SamplingDefaults = NEUTRAL) -> SamplingParams:
        # Not sent: the generation config's max_tokens when it has one, else OpenAI's default of 16.
        unset = "max_tokens" not in self.model_fields_set and defaults.max_tokens is not None
        params = self._make_params(None if unset else self.max_tokens, self.logprobs, num_prompt_tokens,
                                   max_model_len, "prompt", defaults)
        if self.echo and self.logprobs is not None:  # echoed prompt tokens come with their logprobs
            params.prompt_logprobs = self.logprobs
        return params


# --------------------------------------------------------------------------------------------- chat


class TextContentPart(StrictModel):
    type: Literal["text"]
    text: Text


class FunctionDefinition(StrictModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    description: Text | None = None
    parameters: dict[str, Any] | None = Field(None, description="a valid JSON schema of the arguments object")
    strict: bool | None = None


class ChatTool(StrictModel):
    type: Literal["function"]
    function: FunctionDefinition

    def to_template_dict(self) -> dict[str, Any]:
        """What HF chat templates take in `tools`; no parameters is OpenAI's "takes no arguments",
        written out for templates that print the parameters' schema."""
        function = self.function.model_dump(exclude_none=True)
        function.setdefault("parameters", {"type": "object", "properties": {}})
        return {"type": "function", "function": function}


class FunctionName(StrictModel):
    name: str


class NamedToolChoice(StrictModel):
    type: Literal["function"]
    function: FunctionName


class MessageFunctionCall(StrictModel):
    name: str
    arguments: Text  # JSON text, as the response gave it


class MessageToolCall(StrictModel):
    id: str
    type: Literal["function"] = "function"
    function: MessageFunctionCall

    def to_template_dict(self) -> dict[str, Any]:
        # Templates write the arguments out themselves (`| tojson`): they take them as an object.
        try:
            arguments: Any = json.loads(self.function.arguments)
        except ValueError:
            arguments = self.function.arguments
        return {"id": self.id, "type": "function", "function": {"name": self.function.name, "arguments": arguments}}


# A tool turn answers a call (its id); only an assistant turn makes calls.
_TOOL_TURN_RULES = (_never(role={"const": "tool"}, tool_call_id={"type": "null"}),
                    _never(tool_calls={"type": "array", "minItems": 1}, role={"not": {"const": "assistant"}}))


class ChatMessage(StrictModel):
    model_config = ConfigDict(json_schema_extra={"allOf": list(_TOOL_TURN_RULES)})

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool turn's answer to that call

    @model_validator(mode="after")
    def _tool_fields_in_their_turns(self) -> ChatMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a message with role 'tool' needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message has tool_calls")
        return self

    def to_template_dict(self) -> dict[str, Any]:
        """The {role, content} a chat template expects, with the turn's tool calls or call id; text
        parts are joined by newlines (as vLLM does), absent content is "" and OpenAI's newer
        "developer" role is the templates' "system"."""
        text = "\n".join(part.text for part in self.content) if isinstance(self.content, list) else self.content or ""
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": text}
        if self.tool_calls:
            message["tool_calls"] = [call.to_template_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class _TemplateFlags(OpenAIRequest):
    """vLLM's chat-template extras."""

    RULES: ClassVar[Rules] = (TEMPLATE_FLAGS_EXCLUSIVE,)
    add_generation_prompt: bool = True
    continue_final_message: bool = Field(False, description="needs add_generation_prompt false")

    def check_template_flags(self) -> None:
        if self.add_generation_prompt and self.continue_final_message:
            raise bad_request("add_generation_prompt and continue_final_message cannot both be true.",
                              "continue_final_message")


class ChatCompletionRequest(_SamplingRequest, _TemplateFlags):
    UNSUPPORTED = CHAT_UNSUPPORTED
    RULES: ClassVar[Rules] = (STREAM_OPTIONS_NEED_STREAM, TEMPLATE_FLAGS_EXCLUSIVE, TOP_LOGPROBS_NEED_LOGPROBS)
    ENDPOINT = "chat completions"

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = False
    top_logprobs: NumLogprobs | None = Field(None, description="needs logprobs true")
    tools: list[ChatTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="'required' or a named function need tools (the function among them); 'auto', the "
                          "default with tools, needs a server started with --enable-auto-tool-choice")
    parallel_tool_calls: bool | None = True

    def check_supported(self) -> None:
        super().check_supported()
        if self.top_logprobs and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs set to true.", "top_logprobs")
        self.check_template_flags()

    @property
    def tool_choice_name(self) -> str:
        """"none", "auto", "required" or the named function's name (tools given: "auto" by default)."""
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            return choice.function.name
        return choice or ("auto" if self.tools else "none")

    def template_tools(self) -> list[dict[str, Any]] | None:
        return [tool.to_template_dict() for tool in self.tools] if self.tools else None

    def token_counts(self) -> dict[str, int | None]:
        return {**super().token_counts(), "max_tokens": self.max_tokens,
                "max_completion_tokens": self.max_completion_tokens}

    def to_sampling_params(self, num_prompt_tokens: int, max_model_len: int,
                           defaults: SamplingDefaults = NEUTRAL,
                           tool_constraint: StructuredOutputsParams | None = None) -> SamplingParams:
        """`tool_constraint`: the grammar tool_choice "required" or a named function asks for."""
        max_tokens = _or(self.max_completion_tokens, self.max_tokens)
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return self._make_params(max_tokens, logprobs, num_prompt_tokens, max_model_len, "messages", defaults,
                                 tool_constraint)


# ------------------------------------------------------------------------------------ tokenize


class TokenizeRequest(_TemplateFlags):
    """Either `prompt` (text, special tokens added by default) or `messages` (rendered through the
    chat template, whose text already holds the special tokens)."""

    UNSUPPORTED = TEMPLATE_UNSUPPORTED
    RULES: ClassVar[Rules] = (TEMPLATE_FLAGS_EXCLUSIVE, PROMPT_OR_MESSAGES)
    ENDPOINT = "tokenize"

    model: str | None = None
    prompt: Text | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    tools: list[ChatTool] | None = None
    add_special_tokens: bool | None = None
    return_token_strs: bool = False

    def check_supported(self) -> None:
        self.check_extra_fields()
        if (self.prompt is None) == (self.messages is None):
            raise bad_request("Give exactly one of 'prompt' or 'messages'.", "prompt")
        self.check_template_flags()


class DetokenizeRequest(OpenAIRequest):
    ENDPOINT = "detokenize"

    model: str | None = None
    tokens: list[TokenId]
