"""One worker process per rank on this host (distributed_executor_backend="mp").

Every step's SchedulerOutput is pickled once and written to each worker's pipe; every rank runs
the step (their collectives keep them in lock step) and one rank (ParallelConfig.output_rank: rank
0, or the first of the last pipeline stage) sends the ModelRunnerOutput back.
While the executor waits for anything from its workers it also watches their processes: a worker
that dies (killed, crashed) or raises ends the engine at once with an error naming its rank,
and the other workers are stopped, so nothing hangs on a collective that can never complete.

On the CPU the host's cores are split between the ranks (each process pinned to its share, its
threads as many), so two ranks on two cores run one thread each, and the tensor-parallel
collectives go through shared memory (distributed/shm_comm.py) rather than gloo's loopback TCP.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import time
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

from pagedllm.config import EngineConfig
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.executor.base import Executor, WorkerFailure, smallest_plan
from pagedllm.executor.worker_proc import WorkerError, WorkerProcSpec, run_worker
from pagedllm.outputs import ModelRunnerOutput, ModelRunnerOutputFuture
from pagedllm.worker.memory import KVCachePlan

logger = logging.getLogger(__name__)
_STOP_TIMEOUT_S = 5.0
# How long an error from one worker waits for another's exit to show (a rank killed mid-step makes
# its peers' collectives fail first)
_DEATH_GRACE_S = 0.5


@dataclass
class _WorkerHandle:
    rank: int
    proc: BaseProcess
    conn: Connection


class _PendingStep:
    """ModelRunnerOutputFuture of a step sent to the workers: its result is the output rank's reply."""

    def __init__(self, executor: MultiprocExecutor, seq: int) -> None:
        self._executor, self._seq = executor, seq

    def result(self) -> ModelRunnerOutput:
        output: ModelRunnerOutput = self._executor._step_result(self._seq)
        return output


class MultiprocExecutor(Executor):
    def __init__(self, config: EngineConfig, eos_token_id: int | None) -> None:
        super().__init__(config, eos_token_id)
        from pagedllm.distributed.process_group import free_port

        parallel = config.parallel_config
        world = parallel.world_size
        ctx = multiprocessing.get_context("spawn")  # fork would copy the parent's threads' locks
        port = free_port()
        cpus = _split_cpus(world) if config.device_config.device == "cpu" else [None] * world
        log_level = logging.getLogger("pagedllm").getEffectiveLevel()
        logger.info("Starting %d worker processes (tensor_parallel_size %d, pipeline_parallel_size %d)%s", world,
                    parallel.tensor_parallel_size, parallel.pipeline_parallel_size,
                    "" if cpus[0] is None else ", cores " + " | ".join(",".join(map(str, c or ())) for c in cpus))
        start = time.perf_counter()
        self.workers: list[_WorkerHandle] = []
        for rank in range(world):
            parent_end, child_end = ctx.Pipe()
            spec = WorkerProcSpec(config, eos_token_id, rank, port, cpus[rank], log_level, shared_memory=True,
                                  ranks_on_host=world)
            proc = ctx.Process(target=run_worker, args=(spec, child_end), name=f"pagedllm-worker-{rank}", daemon=True)
            proc.start()
            child_end.close()
            self.workers.append(_WorkerHandle(rank, proc, parent_end))
        self._finalizer = weakref.finalize(self, _stop_workers, list(self.workers))
        self._sent = 0  # steps sent to the workers
        self._read = 0  # steps whose result was read
        self._results: dict[int, ModelRunnerOutput] = {}  # read ahead of their future's result()
        self._inbox: dict[int, deque[tuple[str, Any]]] = {w.rank: deque() for w in self.workers}
        for worker in self.workers:
            self._receive(worker.rank, expect="ready")
        logger.info("%d workers ready in %.1f s", world, time.perf_counter() - start)

    def determine_kv_cache(self) -> KVCachePlan:
        """The smallest rank's plan: every rank holds the same block table."""
        return smallest_plan(self._call_all("determine_kv_cache"))

    def initialize_cache(self, config: EngineConfig) -> None:
        self.config = config
        self._call_all("initialize_cache", config)

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        return self.execute_model_async(scheduler_output).result()

    def execute_model_async(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutputFuture:
        self._broadcast("execute", scheduler_output)
        self._sent += 1
        return _PendingStep(self, self._sent)

    def shutdown(self) -> None:
        self._finalizer()

    def _step_result(self, seq: int) -> ModelRunnerOutput:
        """Step `seq`'s output; the steps before it are read first (the output rank answers in order)."""
        while self._read < seq:
            self._read += 1
            self._results[self._read] = self._receive(self.config.parallel_config.output_rank)
        return self._results.pop(seq)

    def _call_all(self, method: str, arg: Any = None) -> list[Any]:
        """Every rank's reply to `method`, in rank order."""
        self._broadcast(method, arg)
        return [self._receive(worker.rank) for worker in self.workers]

    def _broadcast(self, method: str, arg: Any) -> None:
        payload = pickle.dumps((method, arg), protocol=pickle.HIGHEST_PROTOCOL)
        for worker in self.workers:
            try:
                worker.conn.send_bytes(payload)
            except (BrokenPipeError, OSError):
                self._fail(worker, "cannot be reached (its pipe is closed)")

    def _receive(self, rank: int, expect: str = "reply") -> Any:
        """The next message of worker `rank`, watching every worker meanwhile: one that dies or
        reports an error raises at once (the others stopped). Other ranks' messages wait in
        their inbox (replies to a call to all ranks arrive in any order)."""
        inbox = self._inbox[rank]
        by_object: dict[Any, _WorkerHandle] = {}
        for w in self.workers:
            by_object[w.conn] = by_object[w.proc.sentinel] = w
        while not inbox:
            ready = wait(list(by_object))
            # a message before an exit: an error a worker sent is the better report than its exit code
            ready.sort(key=lambda obj: not isinstance(obj, Connection))
            for obj in ready:
                worker = by_object[obj]
                if not isinstance(obj, Connection):
                    self._fail_exited(worker)
                assert isinstance(obj, Connection)
                try:
                    kind, value = obj.recv()
                except (EOFError, OSError):
                    self._fail_exited(worker)
                if kind == "error":
                    assert isinstance(value, WorkerError)
                    self._fail_if_one_died(worker)  # a peer's death is the cause of a collective's error
                    _stop_workers(self.workers, grace_s=0.0)
                    raise value.to_exception()
                self._inbox[worker.rank].append((kind, value))
        kind, value = inbox.popleft()
        if kind != expect:
            self._fail(self.workers[rank], f"sent an unexpected {kind!r} message")
        return value

    def _fail_if_one_died(self, reporter: _WorkerHandle) -> None:
        """WorkerFailure naming another worker that was killed or crashed, if one was or is within
        a moment (one that reported its own error exits with status 0)."""
        others = [w for w in self.workers if w is not reporter]
        exited = wait([w.proc.sentinel for w in others], timeout=_DEATH_GRACE_S)
        for worker in others:
            if worker.proc.sentinel in exited:
                worker.proc.join(1.0)
                if worker.proc.exitcode != 0:
                    self._fail_exited(worker)

    def _fail_exited(self, worker: _WorkerHandle) -> NoReturn:
        """WorkerFailure for a worker whose process ended (its sentinel fired or its pipe closed: the
        exit status is known once the process is reaped, a moment later)."""
        worker.proc.join(1.0)
        self._fail(worker, _exit_description(worker.proc))

    def _fail(self, worker: _WorkerHandle, what: str) -> NoReturn:
        _stop_workers(self.workers, grace_s=0.0)
        raise WorkerFailure(f"Worker rank {worker.rank} (pid {worker.proc.pid}) {what}; the engine stops.")


def _exit_description(proc: BaseProcess) -> str:
    code = proc.exitcode
    if code is None:
        return "closed its pipe"
    if code < 0:
        import signal

        return f"was killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _split_cpus(world_size: int) -> list[tuple[int, ...] | None]:
    """This process's cores in `world_size` contiguous shares (each at least one core; ranks
    share cores when there are fewer cores than ranks)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < world_size:
        return [(cores[rank % len(cores)],) for rank in range(world_size)]
    share = len(cores) // world_size
    return [tuple(cores[rank * share:(rank + 1) * share]) for rank in range(world_size)]


def _stop_workers(workers: list[_WorkerHandle], grace_s: float = _STOP_TIMEOUT_S) -> None:
    """Ask the workers to stop, then make sure they have (at once with no grace: after a failure
    the survivors wait in a collective for the lost rank and would not read the request)."""
    payload = pickle.dumps(("shutdown", None))
    for w in workers:
        if w.proc.is_alive() and grace_s > 0:
            with contextlib.suppress(BrokenPipeError, OSError):
                w.conn.send_bytes(payload)
    deadline = time.monotonic() + grace_s
    for w in workers:
        w.proc.join(max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w.proc.is_alive():  # stuck in a collective with a dead peer
            w.proc.kill()
            w.proc.join()
        w.conn.close()
