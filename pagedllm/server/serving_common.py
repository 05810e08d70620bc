"""What completions and chat completions share: admission checks, tokenization, starting requests."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from pagedllm.outputs import RequestOutput
from pagedllm.sampling_params import SamplingParams
from pagedllm.server.engine_client import EngineClient
from pagedllm.server.errors import (
    OpenAIError,
    bad_request,
    context_length_exceeded,
    engine_dead,
    from_engine_exception,
    model_not_found,
    overloaded,
)
from pagedllm.server.protocol import ChatMessage, prompt_too_long
from pagedllm.server.settings import ServerSettings
from pagedllm.server.text_worker import Encoded, TextWorker
from pagedllm.server.utils import ClientDisconnected, aclose_quietly, merge_async_iterators, run_until_disconnected


@dataclass(frozen=True)
class TokenizedPrompt:
    text: str | None  # None when the client sent token ids
    token_ids: list[int]

    def as_engine_prompt(self) -> dict[str, Any]:
        prompt: dict[str, Any] = {"prompt_token_ids": self.token_ids}
        if self.text is not None:
            prompt["prompt"] = self.text
        return prompt


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class ServingBase:
    def __init__(self, engine: EngineClient, settings: ServerSettings, text: TextWorker | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.text = text or TextWorker(engine.tokenizer)  # build_app shares one between the endpoints
        self.served_model_names = list(settings.served_model_names) or [engine.model_name]
        # Token ids the server takes (prompts, stop_token_ids, logit_bias, /detokenize): those the
        # tokenizer knows, as vLLM checks them; the OpenAPI document states the same bound.
        self.vocab_size = len(engine.tokenizer)

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def resolve_model(self, model: str | None) -> str:
        """The name to report in the response; a 404 for a model this server does not serve."""
        if model is None:
            return self.served_model_names[0]
        if model not in self.served_model_names:
            raise model_not_found(model)
        return model

    def check_admission(self, num_sequences: int) -> None:
        """Shed load before any work is done: a dead engine is a 503, and so is a request whose
        sequences (every prompt times n) would leave more than --max-waiting-requests sequences waiting
        for a slot in the engine (free slots first, counted live: engine/admission.py). Requests
        admitted in the same event-loop turn are not yet in the count, so a burst may pass the bound
        by its own size once; the next turn counts them."""
        if self.engine.is_dead:
            raise engine_dead()
        bound = self.settings.max_waiting_requests
        if bound is not None:
            num_waiting = self.engine.num_waiting_requests(num_sequences)
            if num_waiting > bound:
                raise overloaded(num_waiting, bound)

    def check_token_ids(self, token_ids: Iterable[int], param: str) -> None:
        bad = [t for t in token_ids if t >= self.vocab_size]
        if bad:
            raise bad_request(f"Token ids must be below the vocabulary size {self.vocab_size}; got {bad[:5]}.", param)

    def check_runtime_bounds(self, request: Any) -> None:
        """What the OpenAPI document states of a completion or chat request but its model cannot
        check: token ids (stop_token_ids, logit_bias keys) below the vocabulary size, and token counts
        (max_tokens, min_tokens) below the context, which must hold a prompt too."""
        for param, token_ids in request.token_ids().items():
            self.check_token_ids(token_ids, param)
        max_model_len = self.engine.max_model_len
        for param, count in request.token_counts().items():
            if count is not None and count >= max_model_len:
                raise context_length_exceeded(
                    f"{param}={count} is too large: this model's maximum context length is {max_model_len} "
                    "tokens (max_model_len), and the prompt needs at least one.", param)

    async def tokenize_prompt(self, text: str, param: str) -> TokenizedPrompt:
        """A completion prompt with the tokenizer's special tokens; a 400 if it cannot fit the context
        (counted without listing its ids: a 10 MB prompt must not hold the GIL to be refused)."""
        encoded = await self.text.encode(text, True, self.engine.max_model_len - 1)
        return self._fitted(text, encoded, param)

    async def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool,
                          continue_final_message: bool, fit_context: bool = True,
                          tools: list[dict[str, Any]] | None = None) -> TokenizedPrompt:
        """Apply the model's chat template (with the tools, for templates that show them), then
        tokenize without adding special tokens again (the template already holds the BOS and role
        markers)."""
        conversation = [m.to_template_dict() for m in messages]
        max_tokens = self.engine.max_model_len - 1 if fit_context else None
        try:
            text, encoded = await self.text.encode_chat(conversation, add_generation_prompt, continue_final_message,
                                                        max_tokens, tools)
        except Exception as e:  # jinja errors (e.g. roles not alternating), a model without a template
            raise bad_request(f"The chat template cannot render these messages: {e}", "messages") from None
        return self._fitted(text, encoded, "messages")

    def _fitted(self, text: str, encoded: Encoded, param: str) -> TokenizedPrompt:
        if encoded.token_ids is None:
            raise prompt_too_long(encoded.num_tokens, self.engine.max_model_len, param)
        return TokenizedPrompt(text, encoded.token_ids)

    def start(self, prompts: Sequence[TokenizedPrompt], params: Sequence[SamplingParams],
              request_id: str) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Start one engine request per prompt; outputs come tagged with their prompt's index."""
        generators: list[AsyncIterator[RequestOutput]] = []
        try:
            for i, (prompt, p) in enumerate(zip(prompts, params)):
                sub_id = request_id if len(prompts) == 1 else f"{request_id}-{i}"
                generators.append(self.engine.generate(prompt.as_engine_prompt(), p, sub_id))
        except Exception as e:  # an engine that validates eagerly, before its first yield
            for gen in generators:
                _close_later(gen)
            raise from_engine_exception(e) from None
        return merge_async_iterators(*generators)


# The event loop holds tasks only weakly: a close in flight is kept here until it is done.
_closing: set[asyncio.Future[None]] = set()


def _close_later(gen: AsyncIterator[Any]) -> None:
    task = asyncio.ensure_future(aclose_quietly(gen))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def check_prompt_not_empty(prompt: TokenizedPrompt, param: str) -> None:
    if not prompt.token_ids:
        raise bad_request("The prompt is empty.", param)


Outputs = AsyncIterator[tuple[int, RequestOutput]]
# The client left before the response started; nobody reads this (nginx's "client closed request").
CLIENT_CLOSED_REQUEST = 499


async def collect_final(outputs: Outputs, num_prompts: int) -> list[RequestOutput]:
    """The last (FINAL_ONLY: the only) output of each prompt's request."""
    finals: list[RequestOutput | None] = [None] * num_prompts
    async for index, output in outputs:
        finals[index] = output
    missing = [i for i, out in enumerate(finals) if out is None]
    if missing:
        raise RuntimeError(f"The engine ended requests {missing} without an output.")
    return [out for out in finals if out is not None]


async def _first(outputs: Outputs) -> tuple[int, RequestOutput] | None:
    try:
        return await outputs.__anext__()
    except StopAsyncIteration:
        return None


async def _replay(first: tuple[int, RequestOutput] | None, rest: Outputs) -> Outputs:
    try:
        if first is not None:
            yield first
        async for item in rest:
            yield item
    finally:
        await aclose_quietly(rest)


async def respond(raw_request: Request, outputs: Outputs, num_prompts: int, stream: bool,
                  build_full: Callable[[list[RequestOutput]], Response],
                  build_stream: Callable[[Outputs], AsyncIterator[str]]) -> Response:
    """Run a started request to its HTTP response, aborting it if the client disconnects.

    Streams wait for the first output before sending headers, so errors the engine raises at
    validation become a proper 4xx status instead of an error event in a 200 stream."""
    try:
        if not stream:
            finals = await run_until_disconnected(raw_request, collect_final(outputs, num_prompts))
            return build_full(finals)
        first = await run_until_disconnected(raw_request, _first(outputs))
    except BaseException as e:
        await aclose_quietly(outputs)
        if isinstance(e, ClientDisconnected):
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        if isinstance(e, Exception) and not isinstance(e, OpenAIError):
            raise from_engine_exception(e) from None
        raise
    return _SSEResponse(build_stream(_replay(first, outputs)), outputs)


class _SSEResponse(StreamingResponse):
    """An event stream that closes the request's outputs however the response ends. Starlette may
    cancel the send before it ever starts the body generator (the client left at once), and a
    generator never started runs no `finally`; this one still aborts the request."""

    def __init__(self, content: AsyncIterator[str], outputs: Outputs) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._outputs = outputs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await aclose_quietly(self._outputs)
