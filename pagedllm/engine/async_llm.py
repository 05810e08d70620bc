"""AsyncLLM: the asyncio engine the server uses. Text in this process, the model in another.

The tokenizer, validation, detokenization and stop strings run here on the event loop; the
scheduler and the model run in the engine-core process (engine/core_proc.py), so HTTP and text
work never hold the GIL that the engine's busy loop needs. One task reads the core's outputs and
routes them to per-request queues that `generate()` drains.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from pagedllm.config import EngineConfig
from pagedllm.core.request import Request, RequestStatus
from pagedllm.engine.admission import WaitingCount
from pagedllm.engine.arg_utils import EngineArgs
from pagedllm.engine.core_client import EngineCoreClient
from pagedllm.engine.core_messages import ReadyMessage
from pagedllm.engine.frontend import Frontend, load_model_tokenizer
from pagedllm.engine.input_processor import PromptType
from pagedllm.errors import EngineDeadError
from pagedllm.metrics.iteration_stats import IterationStats
from pagedllm.outputs import EngineCoreOutputs, RequestOutput, SchedulerStats
from pagedllm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

# None: the request was aborted through abort(); its generator ends quietly.
_QueueItem = RequestOutput | BaseException | None


class StatLogger(Protocol):
    def record(self, scheduler_stats: SchedulerStats, iteration_stats: IterationStats) -> None: ...


class AsyncLLM:
    """Implements server.engine_client.EngineClient over an engine core in its own process."""

    def __init__(self, config: EngineConfig, executor: str | None = None,
                 stat_loggers: list[StatLogger] | None = None, engine_core_in_thread: bool = False) -> None:
        # The config asked for; once the core is ready, `config` is the final one built from what
        # its start-up found (the KV cache's block count and the context it fits).
        self.requested_config = self.config = config
        self.tokenizer: Any = load_model_tokenizer(config.model_config)
        self.max_model_len = config.model_config.max_model_len
        self.model_name = str(config.model_config.model)
        self.stat_loggers = list(stat_loggers or [])
        self.scheduler_stats = SchedulerStats()
        self.core = EngineCoreClient(config, self.tokenizer.eos_token_id, executor, in_thread=engine_core_in_thread)
        # Built from the final config when the core is ready (and again after a restart).
        self.frontend: Frontend | None = None
        self.output_processor: Any = None
        self._queues: dict[str, asyncio.Queue[_QueueItem]] = {}
        self.waiting = WaitingCount(config.scheduler_config.max_num_seqs)
        self._dead = False
        self._death_callbacks: list[Callable[[], None]] = []
        self._output_task: asyncio.Task[None] | None = None

    @classmethod
    async def from_engine_args(cls, args: EngineArgs, start_timeout_s: float = 900.0,
                               stat_loggers: list[StatLogger] | None = None,
                               engine_core_in_thread: bool = False) -> AsyncLLM:
        engine = cls(args.create_engine_config(), stat_loggers=stat_loggers,
                     engine_core_in_thread=engine_core_in_thread)
        await engine.start(start_timeout_s)
        return engine

    async def start(self, timeout_s: float) -> None:
        """Start the engine-core process and wait until its model is loaded."""
        self.core.start()
        try:
            ready = await self.core.wait_ready(timeout_s)
        except BaseException:
            self.core.shutdown(timeout_s=2.0)  # a loading core reads no SHUTDOWN: SIGTERM stops it soon
            raise
        self._serve_outputs(ready)

    def _serve_outputs(self, ready: ReadyMessage) -> None:
        self.config = self.requested_config.with_kv_cache(ready.num_blocks, ready.max_model_len)
        self.max_model_len = self.config.model_config.max_model_len
        self.frontend = Frontend(self.config.model_config, self.tokenizer)
        self.output_processor = self.frontend.output_processor
        self.output_processor.iteration_stats = IterationStats()
        self.scheduler_stats.num_blocks = ready.num_blocks
        loop = asyncio.get_running_loop()
        self.core.watch_death(loop, lambda: self._on_dead("the engine-core process exited"))
        self._output_task = loop.create_task(self._output_loop(), name="pagedllm-output-loop")

    async def restart(self, timeout_s: float) -> None:
        """After the core died: start a fresh engine-core process and serve again.

        Requests that were in flight have already failed with EngineDeadError; their state here is
        dropped so the new core starts from nothing."""
        assert self._dead, "restart() is for a dead engine core"
        if self._output_task is not None:
            self._output_task.cancel()  # wait_ready reads the output socket now
        for request_id in list(self.output_processor.requests):
            self.output_processor.abort(request_id)
        self.core.reap()
        self.scheduler_stats = SchedulerStats()
        self.waiting.reset()
        self.core.start()
        ready = await self.core.wait_ready(timeout_s)  # stale outputs of the dead core are skipped there
        self._serve_outputs(ready)
        self._dead = False
        logger.warning("Engine core restarted (pid %s).", self.core.proc.pid if self.core.proc else "thread")

    # ---- EngineClient ----------------------------------------------------------------------------

    async def generate(self, prompt: PromptType, params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        if self._dead:
            raise EngineDeadError("The engine core is not running.")
        assert self.frontend is not None, "start() comes first"
        requests = self.frontend.make_requests(request_id, prompt, params)  # ValueError on bad input
        queue: asyncio.Queue[_QueueItem] = asyncio.Queue()
        self._queues[request_id] = queue
        finished = False
        try:
            await self._send(requests)
            while not finished:
                item = await queue.get()
                if item is None:
                    finished = True  # aborted by abort(), already released
                    return
                if isinstance(item, BaseException):
                    finished = True  # nothing to abort: the core refused it or is gone
                    raise item
                finished = item.finished
                yield item
        finally:
            self._queues.pop(request_id, None)
            if not finished:  # the caller left early (disconnect, cancel): free its blocks now
                self._abort_now(request_id)

    async def abort(self, request_id: str) -> None:
        self._abort_now(request_id)
        queue = self._queues.get(request_id)
        if queue is not None:
            queue.put_nowait(None)

    async def check_health(self) -> None:
        if self._dead or not self.core.is_alive:
            raise EngineDeadError("The engine core is not running.")

    @property
    def is_dead(self) -> bool:
        return self._dead

    def num_waiting_requests(self, num_new: int = 0) -> int:
        return self.waiting.num_waiting(num_new)

    # ---- lifecycle -------------------------------------------------------------------------------

    def on_death(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the engine core is found dead (the server exits then)."""
        self._death_callbacks.append(callback)

    def shutdown(self) -> None:
        self._dead = True
        if self._output_task is not None:
            self._output_task.cancel()
        self.core.shutdown()

    # ---- internals -------------------------------------------------------------------------------

    async def _send(self, requests: list[Request]) -> None:
        self.waiting.on_sent(len(requests))  # before the await: admission must see them at once
        try:
            await self.core.add_requests(requests)
        except BaseException:  # cancelled while the socket was full, or the core is gone: never sent
            self.waiting.on_sent(-len(requests))
            raise

    def _abort_now(self, request_id: str) -> None:
        children = self.output_processor.abort(request_id)
        if children and not self._dead:
            self.core.abort_requests(children)

    async def _output_loop(self) -> None:
        try:
            while True:
                self._handle(await self.core.get_outputs())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a failed core, or a bug here: either way no request can progress
            logger.exception("Engine output loop failed")
            self._on_dead(str(e))

    def _handle(self, outs: EngineCoreOutputs) -> None:
        if outs.errors:
            self._fail_refused(outs.errors)
        results, stopped = self.output_processor.process_outputs(outs.outputs)
        for result in results:
            queue = self._queues.get(result.request_id)
            if queue is not None:
                queue.put_nowait(result)
        if stopped:  # stop strings are found here; the core must let those sequences go
            self.core.abort_requests(stopped, RequestStatus.FINISHED_STOPPED)
        if outs.stats is not None:
            self.scheduler_stats = outs.stats
            self.waiting.on_stats(outs.stats)
        self._log_stats()

    def _fail_refused(self, errors: dict[str, str]) -> None:
        """The core refused some sequences at admission: fail their requests with the reason."""
        for child_id, message in errors.items():
            parent = self.output_processor.parent_of(child_id)
            if parent is None:
                continue
            self._abort_now(parent)  # its other sequences, if the core took them
            queue = self._queues.get(parent)
            if queue is not None:
                queue.put_nowait(ValueError(message))

    def _log_stats(self) -> None:
        stats = self.output_processor.iteration_stats
        if not self.stat_loggers or stats is None:
            return
        self.output_processor.iteration_stats = IterationStats()
        for stat_logger in self.stat_loggers:
            stat_logger.record(self.scheduler_stats, stats)

    def _on_dead(self, reason: str) -> None:
        if self._dead:
            return
        self._dead = True
        logger.error("Engine core is dead (%s); failing %d in-flight requests.", reason, len(self._queues))
        for queue in self._queues.values():
            queue.put_nowait(EngineDeadError(f"The engine core died ({reason})."))
        for callback in self._death_callbacks:
            callback()
