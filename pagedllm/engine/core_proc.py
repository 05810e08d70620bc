"""The engine core's own process: a busy loop of (read new requests and aborts) -> step -> send outputs.

Started by engine/core_client.py with multiprocessing's spawn. It connects to the two ZMQ sockets the
client bound (PULL for input, PUSH for output), says READY once the model is loaded and the KV cache
allocated, and then steps whenever there is work, blocking on its input socket when there is none.
"""
from __future__ import annotations

import logging
import os
import signal
import traceback

import zmq

from pagedllm.config import EngineConfig
from pagedllm.core.request import RequestStatus
from pagedllm.engine.core import EngineCore
from pagedllm.engine.core_messages import (
    FailedMessage,
    FromCore,
    ReadyMessage,
    ToCore,
    abort_decoder,
    add_decoder,
    encoder,
)
from pagedllm.logging_config import configure_logging
from pagedllm.outputs import EngineCoreOutputs

logger = logging.getLogger(__name__)

# How long an idle core blocks on its input before checking that its parent is still there.
_IDLE_POLL_MS = 500


class _Shutdown(Exception):
    pass


class EngineCoreProc:
    def __init__(self, core: EngineCore, input_socket: zmq.Socket, output_socket: zmq.Socket,
                 watch_parent: bool = True) -> None:
        self.core = core
        self.input_socket = input_socket
        self.output_socket = output_socket
        self.parent_pid = os.getppid() if watch_parent else None

    def run(self) -> None:
        while True:
            if not self.core.has_unfinished_requests():
                self._wait_for_input()
            handled = self._drain_input()
            if self.core.has_unfinished_requests():
                outputs = self.core.step()
            elif handled:  # aborts while idle change the stats; report them
                outputs = EngineCoreOutputs([])
            else:
                continue
            self._send(outputs)

    def _wait_for_input(self) -> None:
        while not self.input_socket.poll(_IDLE_POLL_MS):
            # the server is gone; nobody will read our outputs
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                raise _Shutdown()

    def _drain_input(self) -> bool:
        """Apply every message waiting on the input socket; True if there were any."""
        handled = False
        errors: dict[str, str] = {}
        while True:
            try:
                kind, payload = self.input_socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            handled = True
            self._handle(ToCore(kind.bytes), payload.buffer, errors)
        if errors:
            self._send(EngineCoreOutputs([], errors=errors))
        return handled

    def _handle(self, kind: ToCore, payload: memoryview, errors: dict[str, str]) -> None:
        if kind is ToCore.ADD:
            for wire_request in add_decoder.decode(payload):
                try:
                    self.core.add_request(wire_request.to_request())
                except ValueError as e:  # can never fit: refuse this one, keep serving the others
                    errors[wire_request.request_id] = str(e)
        elif kind is ToCore.ABORT:
            msg = abort_decoder.decode(payload)
            self.core.abort_requests(msg.request_ids, RequestStatus(msg.status))
        elif kind is ToCore.SHUTDOWN:
            raise _Shutdown()

    def _send(self, outputs: EngineCoreOutputs) -> None:
        outputs.stats = self.core.make_stats()
        self.output_socket.send_multipart((FromCore.OUTPUTS.value, encoder.encode(outputs)), copy=False)


def _raise_shutdown(signum: int, frame: object) -> None:
    raise _Shutdown()


def run_engine_core(config: EngineConfig, eos_token_id: int | None, input_address: str,
                    output_address: str, executor: str | None, log_level: int) -> None:
    """Process entry point (must be importable for spawn)."""
    # Ctrl-C goes to the whole process group; the server decides when we stop (SHUTDOWN or SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_shutdown)
    configure_logging(log_level, "%(asctime)s %(levelname)s engine-core %(name)s: %(message)s")
    ctx = zmq.Context()
    try:
        ok = serve_engine_core(ctx, config, eos_token_id, input_address, output_address, executor,
                               watch_parent=True)
    finally:
        ctx.term()
    if not ok:
        raise SystemExit(1)


def serve_engine_core(ctx: zmq.Context, config: EngineConfig, eos_token_id: int | None, input_address: str,
                      output_address: str, executor: str | None, watch_parent: bool) -> bool:
    """Load the model, say READY, and serve until SHUTDOWN; False if it failed (FAILED was sent).

    Runs as the body of the engine-core process, or in a thread of the server for comparison."""
    input_socket = ctx.socket(zmq.PULL)
    input_socket.connect(input_address)
    output_socket = ctx.socket(zmq.PUSH)
    output_socket.connect(output_address)
    started = False
    try:
        core = EngineCore(config, eos_token_id, executor)
        core.warm_up_grammars()  # a server: the first constrained request should not load the tokenizer
        ready = ReadyMessage(num_blocks=core.num_blocks, pid=os.getpid(),
                             max_model_len=core.config.model_config.max_model_len)
        output_socket.send_multipart((FromCore.READY.value, encoder.encode(ready)))
        started = True
        EngineCoreProc(core, input_socket, output_socket, watch_parent).run()
        return True
    except _Shutdown:
        return True
    except BaseException as e:
        failed = FailedMessage.from_exception(e, traceback.format_exc())
        if started or not failed.bad_input:
            logger.error("Engine core failed:\n%s", failed.traceback)
        else:  # a bad model or setting: the server prints the reason, which says it all
            logger.debug("Engine core failed to start:\n%s", failed.traceback)
        output_socket.send_multipart((FromCore.FAILED.value, encoder.encode(failed)))
        return False
    finally:
        output_socket.close(linger=1000)
        input_socket.close(linger=0)
