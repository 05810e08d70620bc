"""The OpenAPI document says what the server does.

FastAPI's own document promises a 422 that is never sent (validation errors are 400s in OpenAI's
shape) and none of the errors that are. Here every operation lists the statuses it can answer with
OpenAI's error body: its own (`error_responses`, given where the routes are declared) and those of
the middleware, which any request can meet (408, 413, and 401 when an API key is set).

Bounds known only once a model is loaded are written in as well: token ids below the vocabulary
size (`"x-token-id"` marks them in the request models), token counts below the context
(`"x-token-count"`). What JSON schema cannot say (a prompt plus max_tokens within the context,
min_tokens <= max_tokens and none beside a structured output constraint, a chat template that
accepts the messages) is a 400 at runtime.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from pagedllm.server.middleware import PATHS_WITHOUT_KEY
from pagedllm.server.protocol import INT64_MAX
from pagedllm.server.protocol_responses import ErrorResponse

_WHY = {
    400: "Invalid request (OpenAI's invalid_request_error; context_length_exceeded when it cannot fit)",
    401: "Missing or wrong API key",
    404: "Unknown model",
    408: "The request body did not arrive in time (--request-body-timeout)",
    413: "The request body is too large (--max-request-body-bytes)",
    503: "Overloaded (--max-waiting-requests; with Retry-After) or the engine core is dead",
}
_REF = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": _REF.format(model="ErrorResponse")}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that answers these statuses with OpenAI's error body."""
    return {status: {"model": ErrorResponse, "description": _WHY[status]} for status in statuses}


def generation_responses(model: type[BaseModel], chunk: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A generation's 200: `model` as JSON, or with stream true server-sent events, each a `chunk`
    (or an error, when the engine fails mid-stream) as JSON, then `[DONE]`. install_openapi puts
    `chunk` in the document's components."""
    payload = {"anyOf": [{"$ref": _REF.format(model=chunk.__name__)}, _ERROR_REF]}
    event = {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
        {"const": "[DONE]"}, {"type": "string", "contentMediaType": "application/json", "contentSchema": payload}]}}}
    return {200: {"model": model, "description": "The response; with stream true, server-sent events",
                  "content": {"text/event-stream": {"schema": event}}}}


def install_openapi(app: FastAPI, vocab_size: int, max_model_len: int, api_key: bool,
                    extra_models: tuple[type[BaseModel], ...] = ()) -> None:
    """Replace the app's OpenAPI document by the one described above (built once, on first use).
    `extra_models`: schemas that responses name but no route returns (streamed chunks)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    _document_errors(operation, api_key and path not in PATHS_WITHOUT_KEY)
            components = schema["components"]["schemas"]
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            _, extra = models_json_schema([(m, "serialization") for m in extra_models], ref_template=_REF)
            components.update({k: v for k, v in extra.get("$defs", {}).items() if k not in components})
            _bound(schema, vocab_size, max_model_len)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customize it


def _document_errors(operation: dict[str, Any], needs_key: bool) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    statuses = [408, 413] + ([401] if needs_key else [])
    for status in statuses:
        responses.setdefault(str(status), {"description": _WHY[status],
                                           "content": {"application/json": {"schema": _ERROR_REF}}})
    if "401" in responses:
        responses["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}


def _bound(schema: Any, vocab_size: int, max_model_len: int) -> None:
    """Write the runtime bounds where the request models marked them."""
    def visit(node: dict[str, Any]) -> None:
        if node.get("type") == "integer":
            _exact_integer_bounds(node)
        if node.pop("x-token-id", False):  # an integer token id
            node["maximum"] = vocab_size - 1
        if node.pop("x-token-count", False):  # max_tokens, min_tokens: the context holds the prompt too
            node["maximum"] = max_model_len - 1
        names = node.get("propertyNames")
        if isinstance(names, dict) and names.pop("x-token-id", False):  # logit_bias: token ids as keys
            (value,) = node.pop("patternProperties").values()
            node["propertyNames"] = {"type": "string", "pattern": decimal_below(vocab_size)}
            node["additionalProperties"] = value

    _walk(schema, visit)


def _exact_integer_bounds(node: dict[str, Any]) -> None:
    # FastAPI's OpenAPI models hold bounds as floats; 2**63 - 1 (int64's top) is the one a float
    # cannot hold: as a float it rounds up to 2**63, and a validator would then take 2**63.
    for key in ("minimum", "maximum"):
        value = node.get(key)
        if isinstance(value, float) and value.is_integer():
            node[key] = INT64_MAX if value >= 2**63 else int(value)


def _walk(node: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def decimal_below(n: int) -> str:
    """A regex of the decimal numbers 0 .. n-1 as JSON keys write them (no sign, no leading zeros)."""
    top = str(n - 1)
    length = len(top)
    options = ["[0-9]"] if length > 1 else [f"[0-{top}]"]
    options += [f"[1-9][0-9]{{{k - 1}}}" for k in range(2, length)]
    if length > 1:  # the numbers as long as n - 1: below it at the first digit that differs, or equal
        for i, digit in enumerate(top):
            low = 1 if i == 0 else 0
            if int(digit) > low:
                rest = f"[0-9]{{{length - i - 1}}}" if i < length - 1 else ""
                options.append(f"{top[:i]}[{low}-{int(digit) - 1}]{rest}")
        options.append(top)
    return "^(" + "|".join(options) + ")$"
