"""The OpenAI-compatible HTTP app over any `EngineClient`.

`build_app(engine, settings)` returns the FastAPI app; running it (uvicorn, signals, the engine
process) is the launcher's job. Routes: POST /v1/completions, /v1/chat/completions, /tokenize,
/detokenize; GET /v1/models[/{model}], /health, /version; plus what `extra_routers` bring (/metrics).
"""
from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from pagedllm import __version__
from pagedllm.errors import EngineDeadError
from pagedllm.server.engine_client import EngineClient
from pagedllm.server.errors import engine_dead, install_error_handlers, unauthorized
from pagedllm.server.protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from pagedllm.server.protocol_responses import DetokenizeResponse, ModelCard, ModelList, TokenizeResponse
from pagedllm.server.serving_chat import OpenAIServingChat
from pagedllm.server.serving_completion import OpenAIServingCompletion
from pagedllm.server.serving_tokenize import OpenAIServingTokenization
from pagedllm.server.settings import ServerSettings

__all__ = ["ServerSettings", "build_app"]

# Load balancers and orchestrators probe this without credentials.
_PATHS_WITHOUT_KEY = frozenset({"/health"})


class ApiKeyMiddleware:
    """Every request but /health needs `Authorization: Bearer <key>`. Plain ASGI rather than
    @app.middleware("http"), which would wrap `receive` and hide client disconnects from handlers;
    as app-wide middleware it also guards routes mounted later (/metrics) and unknown paths."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _path(scope) in _PATHS_WITHOUT_KEY:
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(values) > 1:  # which one would count? A proxy and a client disagree: refuse both
            await unauthorized("Send one Authorization header, not several.").response()(scope, receive, send)
        elif not values or not self._matches(values[0]):
            await unauthorized().response()(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _matches(self, value: bytes) -> bool:
        # RFC 7235: the scheme is case-insensitive and one or more spaces separate it from the token.
        scheme, _, token = value.partition(b" ")
        token = token.lstrip(b" ")
        ok = scheme.lower() == b"bearer"
        return hmac.compare_digest(token, self._expected) and ok  # constant time: no key-guessing by timing


def _path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _openai_router(engine: EngineClient, settings: ServerSettings) -> APIRouter:
    router = APIRouter()
    completion = OpenAIServingCompletion(engine, settings)
    chat = OpenAIServingChat(engine, settings)
    tokenization = OpenAIServingTokenization(engine, settings)

    @router.post("/v1/completions")
    async def create_completion(request: CompletionRequest, raw_request: Request) -> Response:
        return await completion.create(request, raw_request)

    @router.post("/v1/chat/completions")
    async def create_chat_completion(request: ChatCompletionRequest, raw_request: Request) -> Response:
        return await chat.create(request, raw_request)

    def card(name: str) -> ModelCard:
        return ModelCard(id=name, root=engine.model_name, max_model_len=engine.max_model_len)

    @router.get("/v1/models")
    async def list_models() -> ModelList:
        return ModelList(data=[card(name) for name in completion.served_model_names])

    @router.get("/v1/models/{model:path}")  # `path`: served names may hold slashes ("org/model")
    async def retrieve_model(model: str) -> ModelCard:
        return card(completion.resolve_model(model))

    @router.post("/tokenize")
    async def tokenize(request: TokenizeRequest) -> TokenizeResponse:
        return tokenization.tokenize(request)

    @router.post("/detokenize")
    async def detokenize(request: DetokenizeRequest) -> DetokenizeResponse:
        return tokenization.detokenize(request)

    return router


def _ops_router(engine: EngineClient) -> APIRouter:
    router = APIRouter()

    @router.api_route("/health", methods=["GET", "HEAD"])  # some load balancers probe with HEAD
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
    app = FastAPI(title="pagedllm OpenAI-compatible server", version=__version__)
    install_error_handlers(app)
    app.include_router(_openai_router(engine, settings))
    app.include_router(_ops_router(engine))
    for router in extra_routers:
        app.include_router(router)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.state.engine = engine
    app.state.settings = settings
    return app
