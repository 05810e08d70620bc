"""Fixtures: a fake engine, the app over it (in-process TestClient) and a live uvicorn server on
loopback for the official openai client."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient

from pagedllm.server.api_server import build_app
from pagedllm.server.settings import ServerSettings
from tests.helpers.fake_engine import FakeEngine, make_tokenizer


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


class LiveServer:
    """uvicorn serving the app in a background thread, on a socket bound to a free loopback port."""

    def __init__(self, app) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline and self._thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()


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
