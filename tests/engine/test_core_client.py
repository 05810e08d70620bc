"""EngineCoreClient without a model: stopping a core that is already gone is quiet."""
from __future__ import annotations

import asyncio
import gc
import logging
import threading

import pytest

from pagedllm.engine.core_client import EngineCoreClient


def test_shutdown_of_a_gone_core_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """With no core connected, the SHUTDOWN send fails with zmq.Again inside an asyncio future;
    unread, asyncio logged it with a traceback at exit (the end of a failed `serve`)."""
    release = threading.Event()

    async def run() -> None:
        client = EngineCoreClient(config=None, eos_token_id=None, in_thread=True)  # type: ignore[arg-type]
        client.thread = threading.Thread(target=release.wait)  # "alive", but connected to nothing
        client.thread.start()
        release.set()
        client.shutdown(timeout_s=5)
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(run())
        gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
