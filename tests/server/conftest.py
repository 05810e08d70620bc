"""Fixtures: a fake engine, the app over it (in-process TestClient) and a live uvicorn server on
loopback for the official openai client."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from pagedllm.server.api_server import build_app
from pagedllm.server.settings import ServerSettings
from tests.helpers.fake_engine import FakeEngine, make_tokenizer
from tests.helpers.live_server import LiveServer


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def engine(tokenizer) -> FakeEngine:
    return FakeEngine(tokenizer=tokenizer)


@pytest.fixture
def client(engine: FakeEngine) -> Iterator[TestClient]:
    with TestClient(build_app(engine, ServerSettings()), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def live(tokenizer) -> Iterator[tuple[LiveServer, FakeEngine]]:
    """One server per module (start-up is the slow part); `live_engine` resets its engine per test."""
    engine = FakeEngine(tokenizer=tokenizer)
    with LiveServer(build_app(engine, ServerSettings(served_model_names=["fake-model", "alias"]))) as server:
        yield server, engine


@pytest.fixture
def live_engine(live) -> FakeEngine:
    _, engine = live
    engine.token_delay, engine.paused, engine.dead, engine.num_waiting, engine.free_slots = 0.0, False, False, 0, 256
    engine.requests.clear(), engine.started.clear(), engine.aborted.clear(), engine.finished.clear()
    return engine


@pytest.fixture
def openai_client(live, live_engine):
    import openai

    server, _ = live
    with openai.OpenAI(api_key="unused", base_url=f"{server.base_url}/v1", max_retries=0, timeout=10) as c:
        yield c
