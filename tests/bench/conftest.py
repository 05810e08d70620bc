"""Fixtures of the serving-benchmark tests: the fake OpenAI server of tests/helpers/fake_openai_server.py."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from tests.helpers.fake_openai_server import FakeServerState, make_app


@pytest.fixture
def fake_server() -> Iterator[FakeServerState]:
    """The server runs on its own event loop in a thread: the benchmark calls asyncio.run itself."""
    state = FakeServerState()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(state))
    ready = threading.Event()

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        state.base_url = f"http://{host}:{port}"
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10), "fake server did not start"
    yield state
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
