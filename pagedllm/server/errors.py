"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right status.

Every failure path of the server ends here, so a client never sees FastAPI's own 422 body or a
bare 500: validation errors become 400 `invalid_request_error`, unknown routes 404, and anything
unexpected a 500 in the same shape.
"""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pagedllm.errors import EngineDeadError

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
SERVER_ERROR = "server_error"


class OpenAIError(Exception):
    """An error to return to the client as OpenAI's error body."""

    def __init__(self, message: str, status: int = 400, type: str = INVALID_REQUEST,
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.type = message, status, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(message, HTTPStatus.BAD_REQUEST, INVALID_REQUEST, param, code)


def context_length_exceeded(message: str, param: str | None = None) -> OpenAIError:
    return bad_request(message, param, "context_length_exceeded")


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(f"The model `{model}` does not exist.", HTTPStatus.NOT_FOUND, INVALID_REQUEST,
                       "model", "model_not_found")


def unauthorized(message: str = "Incorrect or missing API key: send 'Authorization: Bearer <key>'.") -> OpenAIError:
    # WWW-Authenticate is what RFC 9110 requires of a 401: the scheme the client should use.
    return OpenAIError(message, HTTPStatus.UNAUTHORIZED, AUTHENTICATION, None, "invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


def request_too_large(max_bytes: int) -> OpenAIError:
    return OpenAIError(f"The request body is larger than this server takes ({max_bytes} bytes, "
                       "--max-request-body-bytes).", HTTPStatus.REQUEST_ENTITY_TOO_LARGE, INVALID_REQUEST, None,
                       "request_too_large")


def body_timeout(timeout_s: float) -> OpenAIError:
    return OpenAIError(f"The request body did not arrive within {timeout_s:g} s (--request-body-timeout).",
                       HTTPStatus.REQUEST_TIMEOUT, INVALID_REQUEST, None, "request_timeout")


def overloaded(num_waiting: int, bound: int) -> OpenAIError:
    # Retry-After lets well-behaved clients (the openai client honours it) back off instead of hammering.
    return OpenAIError(f"The server is overloaded: {num_waiting} sequences would wait for a slot, more than its "
                       f"{bound} (--max-waiting-requests); retry later.",
                       HTTPStatus.SERVICE_UNAVAILABLE, SERVER_ERROR, None, "server_overloaded",
                       headers={"Retry-After": "1"})


def engine_dead() -> OpenAIError:
    return OpenAIError("The engine core is dead; the server cannot serve requests.",
                       HTTPStatus.SERVICE_UNAVAILABLE, SERVER_ERROR, None, "engine_dead")


def from_engine_exception(exc: BaseException) -> OpenAIError:
    """Map what `EngineClient.generate` raises to the error the client gets."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, EngineDeadError):
        return engine_dead()
    if isinstance(exc, ValueError):
        message = str(exc)
        if "max_model_len" in message or "context" in message:
            return context_length_exceeded(message)
        return bad_request(message)
    logger.exception("Unexpected error while serving a request", exc_info=exc)
    return OpenAIError(f"Internal server error: {type(exc).__name__}", HTTPStatus.INTERNAL_SERVER_ERROR,
                       SERVER_ERROR)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable line out of pydantic's error list, and the first offending field as `param`."""
    parts: list[str] = []
    param = None
    for err in exc.errors():
        if err.get("type") == "json_invalid":  # FastAPI's: loc holds the byte offset, not a field
            detail = err.get("ctx", {}).get("error", "")
            return f"The body is not valid JSON: {detail} (at byte {err['loc'][-1]}).", None
        # Drop "body" and union-member tags such as "list[constrained-int]": keep field names and indexes.
        loc = [str(p) for p in err.get("loc", ()) if p != "body" and "[" not in str(p)]
        if param is None and loc:
            param = loc[0]
        part = f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid value')}"
        if part not in parts:
            parts.append(part)
    return "; ".join(parts[:5]) or "Invalid request body.", param


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = _validation_message(exc)
    return bad_request(message, param).response()


async def _on_openai_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    return exc.response()


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = INVALID_REQUEST if exc.status_code < 500 else SERVER_ERROR
    return OpenAIError(str(exc.detail), exc.status_code, kind, headers=dict(exc.headers or {})).response()


async def _on_value_error(request: Request, exc: Exception) -> JSONResponse:
    return from_engine_exception(exc).response()


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return from_engine_exception(exc).response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(OpenAIError, _on_openai_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(ValueError, _on_value_error)
    app.add_exception_handler(EngineDeadError, _on_unexpected)
    app.add_exception_handler(Exception, _on_unexpected)
