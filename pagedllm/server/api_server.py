"""The OpenAI-compatible HTTP app over any `EngineClient`.

`build_app(engine, settings)` returns the FastAPI app; running it (uvicorn, signals, the engine
process) is the launcher's job. Routes: POST /v1/completions, /v1/chat/completions, /tokenize,
/detokenize; GET /v1/models[/{model}], /health, /version; plus what `extra_routers` bring (/metrics).
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response

from pagedllm import __version__
from pagedllm.errors import EngineDeadError
from pagedllm.server.engine_client import EngineClient
from pagedllm.server.errors import engine_dead, install_error_handlers
from pagedllm.server.middleware import ApiKeyMiddleware, RequestBodyMiddleware
from pagedllm.server.openapi import error_responses, generation_responses, install_openapi
from pagedllm.server.protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from pagedllm.server.protocol_responses import (
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionResponse,
    CompletionStreamResponse,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeResponse,
)
from pagedllm.server.serving_chat import OpenAIServingChat
from pagedllm.server.serving_completion import OpenAIServingCompletion
from pagedllm.server.serving_tokenize import OpenAIServingTokenization
from pagedllm.server.settings import ServerSettings
from pagedllm.server.text_worker import TextWorker

__all__ = ["ServerSettings", "build_app"]


def _openai_router(engine: EngineClient, settings: ServerSettings, text: TextWorker) -> APIRouter:
    router = APIRouter()
    completion = OpenAIServingCompletion(engine, settings, text)
    chat = OpenAIServingChat(engine, settings, text)
    tokenization = OpenAIServingTokenization(engine, settings, text)

    @router.post("/v1/completions", responses={**generation_responses(CompletionResponse, CompletionStreamResponse),
                                               **error_responses(400, 404, 503)})
    async def create_completion(request: CompletionRequest, raw_request: Request) -> Response:
        return await completion.create(request, raw_request)

    @router.post("/v1/chat/completions",
                 responses={**generation_responses(ChatCompletionResponse, ChatCompletionStreamResponse),
                            **error_responses(400, 404, 503)})
    async def create_chat_completion(request: ChatCompletionRequest, raw_request: Request) -> Response:
        return await chat.create(request, raw_request)

    def card(name: str) -> ModelCard:
        return ModelCard(id=name, root=engine.model_name, max_model_len=engine.max_model_len)

    @router.get("/v1/models")
    async def list_models() -> ModelList:
        return ModelList(data=[card(name) for name in completion.served_model_names])

    # `path`: served names may hold slashes ("org/model")
    @router.get("/v1/models/{model:path}", responses=error_responses(404))
    async def retrieve_model(model: str) -> ModelCard:
        return card(completion.resolve_model(model))

    @router.post("/tokenize", response_model=TokenizeResponse, responses=error_responses(400, 404))
    async def tokenize(request: TokenizeRequest) -> Response:
        return await tokenization.tokenize(request)

    @router.post("/detokenize", response_model=DetokenizeResponse, responses=error_responses(400, 404))
    async def detokenize(request: DetokenizeRequest) -> Response:
        return await tokenization.detokenize(request)

    return router


def _ops_router(engine: EngineClient) -> APIRouter:
    router = APIRouter()

    health_docs: dict[int | str, dict[str, Any]] = {200: {"description": "The engine core is alive"},
                                                    **error_responses(503)}

    # Some load balancers probe with HEAD; two routes, so that each has its own operation id.
    @router.head("/health", response_class=Response, responses=health_docs, operation_id="health_head")
    @router.get("/health", response_class=Response, responses=health_docs, operation_id="health")
    async def health() -> Response:
        if engine.is_dead:
            raise engine_dead()
        try:
            await engine.check_health()
        except EngineDeadError:
            raise engine_dead() from None
        return Response(status_code=200)

    @router.get("/version")
    async def version() -> dict[str, str]:
        return {"version": __version__}

    return router


def build_app(engine: EngineClient, settings: ServerSettings | None = None,
              extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The app over `engine`. `extra_routers` (e.g. the launcher's /metrics) sit behind the same
    API key check and error handlers as the built-in routes."""
    settings = settings or ServerSettings()
    text = TextWorker(engine.tokenizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        text.shutdown()

    app = FastAPI(title="pagedllm OpenAI-compatible server", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(_openai_router(engine, settings, text))
    app.include_router(_ops_router(engine))
    for router in extra_routers:
        app.include_router(router)
    # The last added runs first: the key is checked before a byte of the body is read.
    app.add_middleware(RequestBodyMiddleware, max_bytes=settings.max_request_body_bytes,
                       timeout_s=settings.request_body_timeout_s)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    install_openapi(app, len(engine.tokenizer), engine.max_model_len, api_key=settings.api_key is not None,
                    extra_models=(CompletionStreamResponse, ChatCompletionStreamResponse))
    app.state.engine = engine
    app.state.settings = settings
    return app
