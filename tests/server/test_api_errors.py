"""Every error class returns its status and OpenAI's error body; malformed input never gives a 5xx."""
from __future__ import annotations

import json
import random

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from pagedllm.server.api_server import build_app
from pagedllm.server.settings import ServerSettings
from tests.helpers.fake_engine import FakeEngine

API_KEY = "sk-test-key"
CHAT = {"messages": [{"role": "user", "content": "Hi"}]}


def _assert_error(response, status: int, code: str | None = None, type_: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if type_ is not None:
        assert error["type"] == type_
    return error


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"prompt": "Hi", "temperature": -1}, None),
    ("/v1/completions", {"prompt": "Hi", "top_p": 0}, None),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 0}, None),
    ("/v1/completions", {"prompt": "Hi", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "Hi", "logprobs": 21}, "logprobs"),
    ("/v1/completions", {"prompt": "Hi", "logit_bias": {"abc": 1}}, "logit_bias"),
    ("/v1/completions", {"prompt": "Hi", "logit_bias": {"5": 500}}, "logit_bias"),
    ("/v1/completions", {"prompt": "Hi", "best_of": 3}, "best_of"),
    ("/v1/completions", {"prompt": "Hi", "stream_options": {"include_usage": True}}, "stream_options"),
    ("/v1/completions", {"prompt": "Hi", "seed": 2**70}, "seed"),
    ("/v1/completions", {"prompt": "Hi", "top_k": 2**64}, "top_k"),  # would not fit the core's int64
    ("/v1/completions", {"prompt": "Hi", "stop_token_ids": [2**64]}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "Hi", "logit_bias": {str(2**64): 1}}, "logit_bias"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 2**64}, "max_completion_tokens"),
    ("/v1/completions", {"prompt": "Hi", "min_tokens": 20, "max_tokens": 10}, None),
    ("/v1/completions", {"prompt": []}, "prompt"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": [1, -2]}, "prompt"),
    ("/v1/completions", {"prompt": [5000]}, None),  # outside the vocabulary: the engine's ValueError
    ("/v1/completions", {}, "prompt"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, "tools"),
    ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/v1/chat/completions", {**CHAT, "presence_penalty": 3}, None),
])
def test_invalid_parameters_are_400(client: TestClient, engine: FakeEngine, path, body, param):
    error = _assert_error(client.post(path, json=body), 400, type_="invalid_request_error")
    if param is not None:
        assert error["param"] == param
    assert not engine.started


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"prompt": "x" * 256}, "prompt"),
    ("/v1/completions", {"prompt": ["ok", "x" * 300]}, "prompt"),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 255}, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 300}]}, "messages"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 1000}, "max_completion_tokens"),
])
def test_too_long_for_the_context_is_400_context_length_exceeded(client, engine: FakeEngine, path, body, param):
    error = _assert_error(client.post(path, json=body), 400, "context_length_exceeded", "invalid_request_error")
    assert error["param"] == param and "256" in error["message"]
    assert not engine.started  # rejected before any engine work


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("message,code", [("The prompt is over the context (max_model_len=8).", "context_length_exceeded"),
                                          ("Token ids must be in the vocabulary.", None)])
def test_engine_value_errors_are_400_even_when_streaming(client, engine: FakeEngine, monkeypatch, stream, message,
                                                          code):
    def reject(prompt, params):
        raise ValueError(message)

    monkeypatch.setattr(engine, "_validate", reject)
    response = client.post("/v1/completions", json={"prompt": "Hi", "stream": stream})
    error = _assert_error(response, 400, type_="invalid_request_error")
    assert error["code"] == code and error["message"] == message


@pytest.mark.parametrize("path,body", [("/v1/completions", {"prompt": "Hi"}), ("/v1/chat/completions", CHAT),
                                       ("/tokenize", {"prompt": "Hi"}), ("/detokenize", {"tokens": [72]})])
def test_unknown_model_is_404(client, path, body):
    _assert_error(client.post(path, json={**body, "model": "gpt-4"}), 404, "model_not_found", "invalid_request_error")
    assert client.post(path, json={**body, "model": "fake/model-path"}).status_code == 200  # default served name


def test_unknown_route_and_method_keep_openai_body(client):
    _assert_error(client.get("/v1/nothing"), 404)
    _assert_error(client.get("/v1/completions"), 405)


def test_overload_is_503(client, engine: FakeEngine):
    app = build_app(engine, ServerSettings(max_waiting_requests=2))
    with TestClient(app, raise_server_exceptions=False) as c:
        engine.num_waiting = 2
        assert c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200
        engine.num_waiting = 3
        for path, body in [("/v1/completions", {"prompt": "Hi"}), ("/v1/chat/completions", CHAT)]:
            response = c.post(path, json=body)
            _assert_error(response, 503, "server_overloaded")
            assert response.headers["retry-after"] == "1"
        assert c.get("/v1/models").status_code == 200  # only generation is shed


def test_dead_engine_is_503(client, engine: FakeEngine):
    assert client.get("/health").status_code == 200 and client.head("/health").status_code == 200
    engine.dead = True
    _assert_error(client.get("/health"), 503, "engine_dead")
    assert client.head("/health").status_code == 503
    _assert_error(client.post("/v1/chat/completions", json=CHAT), 503, "engine_dead")


def _metrics_router() -> APIRouter:
    router = APIRouter()

    @router.get("/metrics")
    async def metrics() -> dict[str, int]:
        return {"requests": 1}

    return router


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2}), ("POST", "/v1/chat/completions", CHAT),
    ("GET", "/v1/models", None), ("GET", "/version", None), ("POST", "/tokenize", {"prompt": "Hi"}),
    ("POST", "/detokenize", {"tokens": [72]}), ("GET", "/metrics", None),
])
def test_api_key_guards_every_endpoint_but_health(engine: FakeEngine, method, path, body):
    app = build_app(engine, ServerSettings(api_key=API_KEY), extra_routers=[_metrics_router()])
    with TestClient(app, raise_server_exceptions=False) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            _assert_error(c.request(method, path, json=body, headers=headers), 401, "invalid_api_key")
        ok = c.request(method, path, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200, ok.text
        assert c.get("/health").status_code == 200


def test_metrics_router_is_mounted_without_a_key(client, engine: FakeEngine):
    with TestClient(build_app(engine, extra_routers=[_metrics_router()])) as c:
        assert c.get("/metrics").json() == {"requests": 1}


def _random_value(rng: random.Random, depth: int = 0):
    choices = [lambda: None, lambda: rng.choice([True, False]), lambda: rng.randint(-2**70, 2**70),
               lambda: rng.uniform(-1e6, 1e6), lambda: "".join(chr(rng.choice([rng.randint(0, 0x2FF), 0xD800, 0xDFFF])) for _ in range(rng.randint(0, 8))),
               lambda: rng.choice([0, 1, -1, 16, 2**63, "Hi", "", [], {}, [1, 2], [[1], []], 0.5, -0.0])]
    if depth < 3:
        choices += [lambda: [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
                    lambda: {rng.choice(FIELDS): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}]
    return rng.choice(choices)()


FIELDS = ["prompt", "messages", "role", "content", "type", "text", "model", "n", "max_tokens", "temperature", "top_p",
          "stream", "stream_options", "include_usage", "logprobs", "top_logprobs", "echo", "stop", "seed",
          "logit_bias", "top_k", "min_tokens", "stop_token_ids", "tokens", "max_completion_tokens", "best_of"]


def test_fuzz_malformed_bodies_never_5xx(client: TestClient, engine: FakeEngine):
    rng = random.Random(1234)
    paths = ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"]
    bodies: list[bytes] = [b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe\x00garbage", b'{"prompt": NaN}',
                           b'{"prompt": "Hi", "temperature": Infinity}', b'{"prompt": "Hi", "max_tokens": 1e400}',
                           b'{"prompt": "a\\ud800"}', b'{"messages": [{"role": "user", "content": "\\udfff"}]}',
                           b'{"prompt": ["\\ud800"], "stop": "\\ud800"}', b'{"prompt": "\\ud800", "messages": []}']
    for _ in range(150):
        body = {key: _random_value(rng) for key in rng.sample(FIELDS, rng.randint(0, 6))}
        if rng.random() < 0.5:  # near-valid bodies reach deeper validation
            body.setdefault("prompt", rng.choice(["Hi", [72, 105], [[72]], ["a", "b"]]))
            body.setdefault("messages", [{"role": "user", "content": _random_value(rng)}])
        bodies.append(json.dumps(body).encode())
    for raw in bodies:
        for path in paths:
            response = client.post(path, content=raw, headers={"Content-Type": "application/json"})
            assert response.status_code < 500, (path, raw, response.text)
            if response.status_code >= 400:
                assert "error" in response.json()
