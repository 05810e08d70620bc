"""Fields we do not implement: a 400 naming the field when it would change the answer, else a warning."""
from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from tests.helpers.fake_engine import FakeEngine

COMPLETION = ("/v1/completions", {"prompt": "Hi"})
CHAT = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})
TOKENIZE = ("/tokenize", {"messages": [{"role": "user", "content": "Hi"}]})


@pytest.mark.parametrize("endpoint,field,value", [
    *[(e, f, v) for e in (COMPLETION, CHAT) for f, v in [
        ("best_of", 2), ("use_beam_search", True), ("prompt_logprobs", 1), ("truncate_prompt_tokens", 5),
        ("allowed_token_ids", [1, 2]), ("bad_words", ["x"]), ("logits_processors", ["mod.fn"]),
        ("return_tokens_as_token_ids", True)]],
    (COMPLETION, "suffix", "end"), (COMPLETION, "prompt_embeds", "AAAA"), (COMPLETION, "add_special_tokens", False),
    (CHAT, "functions", [{"name": "f"}]),
    (CHAT, "function_call", "auto_x"), (CHAT, "chat_template", "{{ messages }}"),
    (CHAT, "chat_template_kwargs", {"enable_thinking": False}), (CHAT, "documents", [{"text": "d"}]),
    (CHAT, "echo", True), (CHAT, "modalities", ["text", "audio"]), (CHAT, "audio", {"voice": "x"}),
    (CHAT, "reasoning_effort", "low"), (CHAT, "add_special_tokens", True),
    (TOKENIZE, "chat_template", "{{ messages }}"),
])
def test_fields_that_change_the_answer_are_a_400_naming_them(client: TestClient, engine: FakeEngine, endpoint,
                                                              field, value):
    path, body = endpoint
    response = client.post(path, json={**body, field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field} is not supported yet")
    assert not engine.started


@pytest.mark.parametrize("endpoint,field,value", [
    *[(e, f, v) for e in (COMPLETION, CHAT) for f, v in [
        ("guided_json", None), ("response_format", {"type": "text"}), ("best_of", 1), ("best_of", None),
        ("use_beam_search", False), ("allowed_token_ids", []), ("bad_words", None)]],
    (COMPLETION, "suffix", ""), (COMPLETION, "add_special_tokens", True), (CHAT, "functions", []),
    (CHAT, "function_call", "none"), (CHAT, "function_call", "auto"), (CHAT, "modalities", ["text"]),
    (CHAT, "chat_template_kwargs", {}), (CHAT, "add_special_tokens", False),
])
def test_values_that_ask_for_nothing_are_accepted(client: TestClient, endpoint, field, value):
    path, body = endpoint
    response = client.post(path, json={**body, field: value})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("endpoint", [COMPLETION, CHAT, TOKENIZE, ("/detokenize", {"tokens": [72]})])
def test_other_unknown_fields_are_ignored_with_a_warning(client: TestClient, caplog, endpoint):
    path, body = endpoint
    with caplog.at_level(logging.WARNING, logger="pagedllm.server"):
        response = client.post(path, json={**body, "foo_bar": 1, "priority": 0})
    assert response.status_code == 200, response.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ignored" in w and "foo_bar" in w and "priority" in w for w in warnings), warnings


def test_known_fields_do_not_warn(client: TestClient, caplog):
    with caplog.at_level(logging.WARNING, logger="pagedllm.server"):
        assert client.post("/v1/completions", json={"prompt": "Hi", "user": "u", "seed": 1}).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
