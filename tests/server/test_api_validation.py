"""Request validation as OpenAI does it: strict types, integer token ids, the vocabulary, defaults."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.helpers.fake_engine import FakeEngine

CHAT = {"messages": [{"role": "user", "content": "Hi"}]}
VOCAB = 259  # the fake tokenizer: 256 bytes and 3 specials


def _error(response, param: str | None) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    return error


def test_completion_max_tokens_null_means_the_default_16(client: TestClient, engine: FakeEngine):
    for body in ({"prompt": "Hi"}, {"prompt": "Hi", "max_tokens": None}):
        assert client.post("/v1/completions", json=body).status_code == 200
        assert engine.requests[-1][2].max_tokens == 16
    # chat keeps its own rule: no max_tokens is the rest of the context
    assert client.post("/v1/chat/completions", json={**CHAT, "max_tokens": None}).status_code == 200
    prompt_len = len(engine.requests[-1][1]["prompt_token_ids"])
    assert engine.requests[-1][2].max_tokens == engine.max_model_len - prompt_len


@pytest.mark.parametrize("path,field,value", [
    ("/v1/completions", "max_tokens", "4"),
    ("/v1/completions", "n", "2"),
    ("/v1/completions", "n", 2.5),
    ("/v1/completions", "n", True),
    ("/v1/completions", "temperature", "0.5"),
    ("/v1/completions", "top_p", "1"),
    ("/v1/completions", "seed", "7"),
    ("/v1/completions", "logprobs", "2"),
    ("/v1/completions", "echo", "true"),
    ("/v1/completions", "stream", 1),
    ("/v1/completions", "top_k", "5"),
    ("/v1/completions", "min_p", "0.1"),
    ("/v1/completions", "min_tokens", "1"),
    ("/v1/completions", "ignore_eos", "yes"),
    ("/v1/completions", "stop_token_ids", ["5"]),
    ("/v1/chat/completions", "max_completion_tokens", "4"),
    ("/v1/chat/completions", "logprobs", "true"),
    ("/v1/chat/completions", "top_logprobs", "2"),
    ("/v1/chat/completions", "presence_penalty", "0.5"),
    ("/v1/chat/completions", "frequency_penalty", "0"),
    ("/v1/chat/completions", "repetition_penalty", "1.1"),
])
def test_a_string_where_a_number_or_boolean_is_expected_is_a_400(client, engine: FakeEngine, path, field, value):
    base = {"prompt": "Hi"} if path == "/v1/completions" else {**CHAT, "logprobs": True}
    error = _error(client.post(path, json={**base, field: value}), field)
    assert field in error["message"]
    assert not engine.started


def test_json_numbers_are_numbers_whatever_their_spelling(client: TestClient, engine: FakeEngine):
    # JSON has one number type: 1 fills a float field, and 2.0 is the integer 2 (as JSON schema says).
    response = client.post("/v1/completions", json={"prompt": [72.0, 105], "temperature": 0, "top_p": 1,
                                                    "logit_bias": {"5": 1}, "n": 2.0, "max_tokens": 3.0})
    assert response.status_code == 200, response.text
    prompt, params = engine.requests[-1][1], engine.requests[-1][2]
    assert (params.temperature, params.top_p, params.logit_bias) == (0.0, 1.0, {5: 1.0})
    assert (params.n, params.max_tokens, prompt["prompt_token_ids"]) == (2, 3, [72, 105])
    assert all(type(t) is int for t in prompt["prompt_token_ids"])


@pytest.mark.parametrize("key", [" 12 ", "12 ", "+12", "1e3", "0x10", "-1", "", "1.0", "١٢"])
def test_logit_bias_keys_must_be_integer_token_ids(client, engine: FakeEngine, key):
    _error(client.post("/v1/completions", json={"prompt": "Hi", "logit_bias": {key: 1}}), "logit_bias")
    assert not engine.started


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"prompt": "Hi", "stop_token_ids": [VOCAB]}, "stop_token_ids"),
    ("/v1/chat/completions", {**CHAT, "stop_token_ids": [1, 10**6]}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "Hi", "logit_bias": {str(VOCAB): 1}}, "logit_bias"),
    ("/v1/completions", {"prompt": [1, VOCAB]}, "prompt"),
    ("/v1/completions", {"prompt": [[1], [VOCAB]]}, "prompt"),
    ("/detokenize", {"tokens": [VOCAB]}, "tokens"),
])
def test_token_ids_outside_the_vocabulary_are_a_400(client, engine: FakeEngine, path, body, param):
    error = _error(client.post(path, json=body), param)
    assert str(VOCAB) in error["message"]
    assert not engine.started
    body = {**body, param: {"stop_token_ids": [VOCAB - 1], "logit_bias": {str(VOCAB - 1): 1},
                            "prompt": [VOCAB - 1], "tokens": [VOCAB - 1]}[param]}
    assert client.post(path, json=body).status_code == 200  # the last id is fine


def test_json_decode_error_has_no_param(client: TestClient):
    for raw in (b"{not json", b'{"prompt": "Hi",}', b"\xff"):
        error = _error(client.post("/v1/completions", content=raw, headers={"Content-Type": "application/json"}),
                       None)
        assert raw == b"\xff" or "not valid JSON" in error["message"]
