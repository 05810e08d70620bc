"""Client disconnects abort engine requests; a dead engine fails requests fast (live server)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx2
import openai
import pytest

from tests.helpers.fake_engine import FakeEngine

MODEL = "fake-model"


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def base_url(live) -> str:
    return live[0].base_url


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": ["Hi", "Ho"], "n": 2, "max_tokens": 100}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100}),
])
def test_stream_disconnect_mid_stream_aborts(base_url, live_engine: FakeEngine, path, body):
    live_engine.token_delay = 0.05  # ~50 tokens: seconds of generation left when the client leaves
    with httpx2.Client(base_url=base_url, timeout=5) as http:
        with http.stream("POST", path, json={"model": MODEL, "stream": True, **body}) as response:
            assert response.status_code == 200
            assert next(line for line in response.iter_lines() if line.startswith("data:"))
    num_prompts = len(body.get("prompt", [None]))
    _wait_for(lambda: len(live_engine.aborted) == num_prompts)
    assert sorted(live_engine.aborted) == sorted(live_engine.started) and not live_engine.finished


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_before_any_output_aborts(base_url, live_engine: FakeEngine, stream):
    live_engine.paused = True  # requests sit in the engine; the client gives up waiting
    body = {"model": MODEL, "prompt": ["Hi", "Ho"], "max_tokens": 10, "stream": stream}
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(f"{base_url}/v1/completions", json=body, timeout=0.5)
    _wait_for(lambda: len(live_engine.aborted) == 2)
    assert sorted(live_engine.aborted) == sorted(live_engine.started) and not live_engine.finished


def test_completed_request_is_not_aborted(base_url, live_engine: FakeEngine):
    response = httpx2.post(f"{base_url}/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 3})
    assert response.status_code == 200
    assert live_engine.finished == live_engine.started and not live_engine.aborted


def test_engine_death_ends_streams_with_an_error(openai_client, live_engine: FakeEngine, base_url):
    live_engine.token_delay = 0.02
    stream = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=100, stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    live_engine.dead = True
    started = time.monotonic()
    with pytest.raises(openai.APIError, match="engine core is dead"):
        for _ in chunks:
            pass
    assert time.monotonic() - started < 2
    assert httpx2.get(f"{base_url}/health").status_code == 503
    with pytest.raises(openai.InternalServerError) as e:  # the openai client's class for 5xx
        openai_client.completions.create(model=MODEL, prompt="Hi")
    assert e.value.status_code == 503 and e.value.code == "engine_dead"


def test_engine_death_fails_waiting_non_stream_request(base_url, live_engine: FakeEngine):
    live_engine.paused = True
    result: dict[str, httpx2.Response] = {}

    def call() -> None:
        result["r"] = httpx2.post(f"{base_url}/v1/completions",
                                  json={"model": MODEL, "prompt": "Hi", "max_tokens": 5}, timeout=5)

    thread = threading.Thread(target=call)
    thread.start()
    _wait_for(lambda: bool(live_engine.started))
    live_engine.dead = True
    thread.join(timeout=5)
    assert result["r"].status_code == 503
    assert result["r"].json()["error"]["code"] == "engine_dead"


def test_health_when_alive(base_url, live_engine: FakeEngine):
    assert httpx2.get(f"{base_url}/health").status_code == 200
