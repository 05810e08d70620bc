"""Admission (--max-waiting-requests) counts sequences: every prompt times n, free slots first."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pagedllm.server.api_server import build_app
from pagedllm.server.settings import ServerSettings
from tests.helpers.fake_engine import FakeEngine

BOUND = 16
CHAT = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def bounded(engine: FakeEngine):
    engine.free_slots = 256  # idle
    with TestClient(build_app(engine, ServerSettings(max_waiting_requests=BOUND)),
                    raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": ["Hi"] * 273}),  # 256 slots + 16 waiting, and one more
    ("/v1/completions", {"prompt": [[72]] * 69, "n": 4}),
    ("/v1/completions", {"prompt": "Hi", "n": 128, "max_tokens": 1}),  # with only 100 free slots below
    ("/v1/chat/completions", {"messages": CHAT, "n": 128}),
])
def test_every_prompt_times_n_counts(bounded: TestClient, engine: FakeEngine, path, body):
    if body.get("n") == 128:
        engine.free_slots = 100
    response = bounded.post(path, json={"max_tokens": 1, **body})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "server_overloaded" and response.headers["retry-after"] == "1"
    assert not engine.started


def test_a_request_that_fits_the_free_slots_and_the_bound_is_admitted(bounded: TestClient, engine: FakeEngine):
    response = bounded.post("/v1/completions", json={"prompt": ["Hi"] * 272, "max_tokens": 1})
    assert response.status_code == 200 and len(response.json()["choices"]) == 272
    engine.free_slots, engine.num_waiting = 0, BOUND - 2
    assert bounded.post("/v1/completions", json={"prompt": "Hi", "n": 2, "max_tokens": 1}).status_code == 200
    assert bounded.post("/v1/completions", json={"prompt": "Hi", "n": 3, "max_tokens": 1}).status_code == 503
