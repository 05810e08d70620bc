"""The body of one worker process of the multiprocess executor (executor/multiproc.py).

A worker joins the other ranks, loads its part of the model, says "ready", then answers the
executor's calls in order until told to stop or until the executor's end of its pipe closes
(the engine is gone). Every rank runs every step; rank 0 alone sends the step's result back (the
ranks sample the same tokens: their logits are gathered and their generators seeded alike).

Messages (pickled, one per pipe message):
  executor -> worker   (method, argument): "determine_kv_cache", "initialize_cache" (config),
                       "execute" (SchedulerOutput), "shutdown"
  worker -> executor   ("ready", None), ("reply", value) or ("error", WorkerError)

A step is launched before the previous one's result is read when the next call is already
waiting (asynchronous scheduling sends step N+1 before it reads step N), so the device overlaps
the host as with one worker.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from pagedllm.config import EngineConfig
from pagedllm.logging_config import configure_logging

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerProcSpec:
    """What a worker process is started with."""

    config: EngineConfig
    eos_token_id: int | None
    rank: int  # of config.parallel_config.world_size
    port: int  # the rendezvous port of the ranks (distributed/process_group.py)
    cpus: tuple[int, ...] | None  # the cores this rank runs on (CPU: the host's split between ranks)
    log_level: int
    host: str = "127.0.0.1"  # the rendezvous address: rank 0's machine
    # every rank on this host, on the CPU: tensor-parallel collectives through shared memory
    shared_memory: bool = False
    ranks_on_host: int = 1  # the workers sharing this rank's host (its memory)


@dataclass
class WorkerError:
    """A worker's exception as it travels to the executor: the exception itself where it pickles
    (a ValueError stays one), and its traceback text."""

    rank: int
    exception: BaseException | None
    description: str
    traceback: str

    @staticmethod
    def from_exception(rank: int, e: BaseException) -> WorkerError:
        try:
            pickle.dumps(e)
            exc: BaseException | None = e
        except Exception:  # any pickling failure: send the text only
            exc = None
        return WorkerError(rank, exc, f"{type(e).__name__}: {e}", traceback.format_exc())

    def to_exception(self) -> BaseException:
        """The exception to raise in the engine: the worker's own (a bad model or setting stays a
        ValueError), else a RuntimeError naming the rank. The traceback goes to the log."""
        logger.error("Worker rank %d failed:\n%s", self.rank, self.traceback)
        return self.exception or RuntimeError(f"Worker rank {self.rank} failed: {self.description}")


def run_worker(spec: WorkerProcSpec, conn: Connection) -> None:
    """Process entry point (importable for spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when workers stop
    configure_logging(spec.log_level, f"%(asctime)s %(levelname)s worker-{spec.rank} %(name)s: %(message)s")
    try:
        worker = start_worker(spec)
        conn.send(("ready", None))
        _serve(worker, conn, spec.rank, spec.config.parallel_config.output_rank)
    except (EOFError, BrokenPipeError):  # the executor is gone: nothing to report to
        pass
    except BaseException as e:  # reported to the executor, which raises it
        with contextlib.suppress(OSError, EOFError):
            conn.send(("error", WorkerError.from_exception(spec.rank, e)))
    finally:
        from pagedllm.distributed.process_group import destroy_process_group

        destroy_process_group()


def start_worker(spec: WorkerProcSpec) -> Any:
    """Join the ranks and load this rank's part of the model: the Worker, ready for its calls."""
    import torch

    from pagedllm.distributed.process_group import init_parallel
    from pagedllm.worker.worker import Worker

    if spec.cpus is not None:
        os.sched_setaffinity(0, spec.cpus)
    device = None
    if spec.config.device_config.device == "cuda":
        device = torch.device("cuda", spec.rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    backend = "nccl" if device is not None else "gloo"
    parallel = spec.config.parallel_config
    tp, stage = init_parallel(spec.rank, parallel.tensor_parallel_size, parallel.pipeline_parallel_size, spec.port,
                              backend, device, spec.host, spec.shared_memory and device is None)
    worker = Worker(spec.config, spec.eos_token_id, tp, stage, spec.ranks_on_host)
    worker.load_model()
    return worker


def _serve(worker: Any, conn: Connection, rank: int, output_rank: int) -> None:
    pending = None  # a launched step whose result is not sent yet
    while True:
        if pending is not None and not conn.poll():  # nothing else to launch first: finish the step
            _finish(pending, conn, rank, output_rank)
            pending = None
            continue
        method, arg = pickle.loads(conn.recv_bytes())
        if method == "execute":
            step = worker.execute_model_async(arg)
            if pending is not None:
                _finish(pending, conn, rank, output_rank)
            pending = step
            continue
        if pending is not None:
            _finish(pending, conn, rank, output_rank)
            pending = None
        if method == "shutdown":
            return
        conn.send(("reply", call_worker(worker, method, arg)))


def call_worker(worker: Any, method: str, arg: Any) -> Any:
    """A start-up call on the worker (not a step): its reply."""
    if method == "determine_kv_cache":
        return worker.determine_kv_cache()
    if method == "initialize_cache":
        worker.initialize_cache(arg)
        return None
    raise ValueError(f"Unknown worker call {method!r}.")


def _finish(step: Any, conn: Connection, rank: int, output_rank: int) -> None:
    """Wait for a step's result; the output rank sends it (the others' tokens are the same)."""
    output = step.result()
    if rank == output_rank:
        conn.send(("reply", output))
