"""The server side of the engine-core process: start it, send it requests and aborts, read its outputs.

    API server process                               engine-core process
    AsyncLLM --ADD/ABORT--> [PUSH ipc:// PULL] --> EngineCoreProc (scheduler + model)
             <--OUTPUTS---- [PULL ipc:// PUSH] <--

The client binds both sockets and the child connects. With `in_thread=True` the same core loop runs
in a thread of the server over inproc:// sockets instead: the comparison that shows what the
separate process buys (tokenizer and HTTP work off the engine's GIL).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable

import msgspec
import zmq
import zmq.asyncio

from pagedllm.config import EngineConfig
from pagedllm.core.request import Request, RequestStatus
from pagedllm.engine.core_messages import (
    AbortMessage,
    EngineCoreRequest,
    FromCore,
    ReadyMessage,
    ToCore,
    encoder,
    failed_decoder,
    outputs_decoder,
    ready_decoder,
)
from pagedllm.errors import EngineCoreStartError
from pagedllm.outputs import EngineCoreOutputs

logger = logging.getLogger(__name__)


class EngineCoreClient:
    """Owns the engine-core process and the two sockets to it. Use from one asyncio loop."""

    def __init__(self, config: EngineConfig, eos_token_id: int | None, executor: str | None = None,
                 in_thread: bool = False) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="pagedllm-")
        scheme = "inproc://pagedllm-" + os.path.basename(self._dir.name) if in_thread else f"ipc://{self._dir.name}"
        self.input_address = f"{scheme}/input"
        self.output_address = f"{scheme}/output"
        self.in_thread = in_thread
        self.ctx = zmq.asyncio.Context()
        self.input_socket = self.ctx.socket(zmq.PUSH)
        self.input_socket.bind(self.input_address)
        self.output_socket = self.ctx.socket(zmq.PULL)
        self.output_socket.bind(self.output_address)
        self.config = config
        self.eos_token_id = eos_token_id
        self.executor = executor
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        from pagedllm.engine.core_proc import run_engine_core, serve_engine_core

        common = (self.config, self.eos_token_id, self.input_address, self.output_address, self.executor)
        if self.in_thread:
            # A sync context sharing the asyncio one's I/O threads: inproc:// needs one context.
            ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(self.ctx.underlying)
            self.thread = threading.Thread(target=serve_engine_core, args=(ctx, *common, False),
                                           name="pagedllm-engine-core", daemon=True)
            self.thread.start()
            return
        log_level = logging.getLogger("pagedllm").getEffectiveLevel()
        # spawn, not fork: the parent may hold threads (tokenizers, asyncio, torch) that fork would break.
        self.proc = multiprocessing.get_context("spawn").Process(
            target=run_engine_core, args=(*common, log_level), name="pagedllm-engine-core",
            # a daemon cannot start processes: the workers of several ranks need a plain one (the
            # core still exits with the server: it watches its parent, and shutdown() stops it)
            daemon=self.config.parallel_config.world_size == 1)
        self.proc.start()

    async def wait_ready(self, timeout_s: float) -> ReadyMessage:
        """Wait for READY; raise EngineCoreStartError if the core fails, dies or takes too long."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.output_socket.poll(200):
                kind, payload = await self.output_socket.recv_multipart()
                if kind == FromCore.READY.value:
                    return ready_decoder.decode(payload)
                if kind == FromCore.FAILED.value:
                    raise EngineCoreStartError(f"The engine core failed to start: {_failure_reason(payload)}")
            elif not self.is_alive:
                code = self.proc.exitcode if self.proc is not None else None
                raise EngineCoreStartError(f"The engine core exited (code {code}) while starting; see its log "
                                           "above.")
        raise EngineCoreStartError(f"The engine core was not ready after {timeout_s:.0f} s.")

    def watch_death(self, loop: asyncio.AbstractEventLoop, on_death: Callable[[], None]) -> None:
        """Call on_death as soon as the process exits (its sentinel becomes readable). A core in a
        thread dies with the server, or reports its failure as a FAILED message."""
        if self.proc is None:
            return
        sentinel = self.proc.sentinel

        def fire() -> None:
            loop.remove_reader(sentinel)
            on_death()

        loop.add_reader(sentinel, fire)

    @property
    def is_alive(self) -> bool:
        if self.thread is not None:
            return self.thread.is_alive()
        return self.proc is not None and self.proc.is_alive()

    async def add_requests(self, requests: list[Request]) -> None:
        payload = encoder.encode([EngineCoreRequest.from_request(r) for r in requests])
        await self.input_socket.send_multipart((ToCore.ADD.value, payload), copy=False)

    def abort_requests(self, request_ids: list[str],
                       status: RequestStatus = RequestStatus.FINISHED_ABORTED) -> None:
        """Not a coroutine, so it can run in a generator's `finally` while its task is cancelled:
        a PUSH socket below its high-water mark queues the message at once."""
        payload = encoder.encode(AbortMessage(list(request_ids), int(status)))
        self.input_socket.send_multipart((ToCore.ABORT.value, payload), copy=False)

    async def get_outputs(self) -> EngineCoreOutputs:
        """The next message of outputs; raises RuntimeError if the core reports a failure."""
        kind, payload = await self.output_socket.recv_multipart(copy=False)
        if kind.bytes == FromCore.OUTPUTS.value:
            return outputs_decoder.decode(payload.buffer)
        if kind.bytes == FromCore.FAILED.value:
            raise RuntimeError(f"The engine core failed: {_failure_reason(payload.bytes)}")
        raise RuntimeError(f"Unexpected message from the engine core: {kind.bytes!r}")

    def reap(self, timeout_s: float = 5.0) -> None:
        """Forget a dead process (or thread) so that start() can run a new one on the same sockets."""
        if self.proc is not None:
            # The sentinel fires when the child's pipes close, a moment before it can be waited for.
            self.proc.join(timeout_s)
            if self.proc.is_alive():  # not dead after all (a failed output loop): make it so
                self.proc.kill()
                self.proc.join()
            self.proc.close()
        self.proc = None
        self.thread = None

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Ask the core to stop, then make sure it has; close the sockets."""
        if self.thread is not None and self.thread.is_alive():
            self._send_shutdown()
            self.thread.join(timeout_s)
        if self.proc is not None and self.proc.is_alive():
            self._send_shutdown()
            self.proc.join(timeout_s)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(timeout_s)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        self.input_socket.close(linger=0)
        self.output_socket.close(linger=0)
        self.ctx.term()
        self._dir.cleanup()

    def _send_shutdown(self) -> None:
        """Ask the core to stop, if it still listens. On an asyncio socket a send that cannot go
        (a core that is gone: zmq.Again) is a future holding the error, not a raise: read it, or
        asyncio logs "exception was never retrieved" with a traceback at exit."""
        with contextlib.suppress(zmq.ZMQError):
            sent = self.input_socket.send_multipart((ToCore.SHUTDOWN.value, b""), flags=zmq.NOBLOCK)
            if isinstance(sent, asyncio.Future):
                if sent.done():
                    sent.exception()
                else:
                    sent.add_done_callback(lambda f: f.cancelled() or f.exception())


def _failure_reason(payload: bytes) -> str:
    """The one-line reason of a FAILED message (the core has logged its traceback where it helps);
    the traceback goes to this process's debug log."""
    try:
        failed = failed_decoder.decode(payload)
    except msgspec.DecodeError:
        return repr(payload[:200])
    logger.debug("The engine core's traceback:\n%s", failed.traceback)
    return failed.reason
