"""uvicorn's server as `pagedllm serve` runs it (imported when serving starts: uvicorn is not cheap)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import uvicorn

logger = logging.getLogger("pagedllm.server.launch")


class UvicornServer(uvicorn.Server):
    """uvicorn's server without its own signal handling, plus a log line once it listens.

    The launcher's supervisor handles SIGINT/SIGTERM for the whole run, start-up included; uvicorn's
    would also re-raise the signal after its graceful stop, which ends the process with a
    KeyboardInterrupt traceback or status -15 instead of 0."""

    def __init__(self, config: uvicorn.Config, ready_message: str) -> None:
        super().__init__(config)
        self.ready_message = ready_message

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            logger.info("%s", self.ready_message)
