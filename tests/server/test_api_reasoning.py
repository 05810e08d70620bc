"""--reasoning-parser: chat completions split the model's thinking into reasoning_content, whole and
streamed (the streamed deltas joined are the whole response's fields); without it nothing changes."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from pagedllm.server.api_server import build_app
from pagedllm.server.settings import ServerSettings
from tests.helpers.fake_engine import FakeEngine

CHAT = {"messages": [{"role": "user", "content": "Capital of France?"}]}
THOUGHT = "<think>\nThe user asks — simply — for a capital.\n</think>\n\nParis."


def _client(tokenizer, parser: str | None, reply: str) -> TestClient:
    engine = FakeEngine(tokenizer=tokenizer, reply=lambda k: reply)
    return TestClient(build_app(engine, ServerSettings(reasoning_parser=parser)), raise_server_exceptions=False)


def _stream(client: TestClient, body: dict) -> tuple[str, str]:
    reasoning = content = ""
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    delta = choice["delta"]
                    reasoning += delta.get("reasoning_content") or ""
                    content += delta.get("content") or ""
    return reasoning, content


@pytest.mark.parametrize("parser, reply, reasoning, content", [
    ("qwen3", THOUGHT, "\nThe user asks — simply — for a capital.\n", "\n\nParis."),
    ("qwen3", "Paris.", None, "Paris."),
    ("deepseek_r1", "Thinking hard.</think>Paris.", "Thinking hard.", "Paris."),
])
def test_thinking_goes_to_reasoning_content(tokenizer, parser, reply, reasoning, content):
    with _client(tokenizer, parser, reply) as client:
        message = client.post("/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]
        assert message.get("reasoning_content") == reasoning and message["content"] == content
        assert _stream(client, CHAT) == (reasoning or "", content)


def test_without_a_parser_the_thinking_stays_in_content(tokenizer):
    with _client(tokenizer, None, THOUGHT) as client:
        message = client.post("/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]
        assert message["content"] == THOUGHT and "reasoning_content" not in message


def test_an_unknown_parser_is_refused():
    with pytest.raises(ValueError, match="supported: deepseek_r1, qwen3"):
        ServerSettings(reasoning_parser="nope")
