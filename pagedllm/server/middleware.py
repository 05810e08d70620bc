"""The app's ASGI middleware: the API key check, then the request body's size and time limits.

Plain ASGI rather than @app.middleware("http"), which would wrap `receive` and hide client
disconnects from handlers; as app-wide middleware they also cover routes mounted later (/metrics)
and unknown paths. An answer given before the body is read says `Connection: close`, so the rest of
that body is never waited for, nor taken for the next request on the connection.
"""
from __future__ import annotations

import asyncio
import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pagedllm.server.errors import OpenAIError, body_timeout, request_too_large, unauthorized

# Load balancers and orchestrators probe this without credentials.
PATHS_WITHOUT_KEY = frozenset({"/health"})
_CLOSE = {"Connection": "close"}


async def _answer(error: OpenAIError, scope: Scope, receive: Receive, send: Send) -> None:
    error.headers = {**(error.headers or {}), **_CLOSE}
    await error.response()(scope, receive, send)


class ApiKeyMiddleware:
    """Every request but /health needs `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _path(scope) in PATHS_WITHOUT_KEY:
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(values) > 1:  # which one would count? A proxy and a client disagree: refuse both
            await _answer(unauthorized("Send one Authorization header, not several."), scope, receive, send)
        elif not values or not self._matches(values[0]):
            await _answer(unauthorized(), scope, receive, send)
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


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class RequestBodyMiddleware:
    """Reads each request's body before the app runs: at most `max_bytes` (413 beyond, at once when
    Content-Length announces it), all of it within `timeout_s` (else 408). The app then gets the
    body as one message; later `receive` calls pass through, so handlers still see the client leave.
    Every route takes a whole JSON body anyway, so reading it here costs no streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            await _answer(request_too_large(self.max_bytes), scope, receive, send)
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout_s)
        except asyncio.TimeoutError:
            await _answer(body_timeout(self.timeout_s), scope, receive, send)
            return
        except _TooLarge:
            await _answer(request_too_large(self.max_bytes), scope, receive, send)
            return
        except _Disconnected:
            return  # the client left before its body was in: nobody to answer
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:  # chunked, or more than Content-Length said
                raise _TooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:  # the HTTP parser refuses these before us; never trust it as a size
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
