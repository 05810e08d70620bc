"""The workers as Ray actors (distributed_executor_backend="ray"): the ranks on the machines of a
Ray cluster, one placement-group bundle each (a GPU, or a share of a machine's cores).

The executor attaches to a running cluster (`ray start --head` on one machine, `ray start
--address HEAD:6379` on the others, RAY_ADDRESS naming it here) or, without one, starts a local
Ray instance. Each actor runs the same Worker as a process of the mp executor (worker_proc.py):
the ranks rendezvous at rank 0's machine and all-reduce with gloo or NCCL. Every step is one actor
call per rank; the output rank's (ParallelConfig.output_rank) returns the step's output, the
others' None. A rank whose actor dies (its process killed, its machine lost) fails its call, and the
executor ends the engine with an error naming the rank.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
import weakref
from typing import Any

from pagedllm import envs
from pagedllm.config import EngineConfig
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.executor.base import Executor, WorkerFailure, smallest_plan
from pagedllm.executor.worker_proc import WorkerProcSpec, call_worker, start_worker
from pagedllm.outputs import ModelRunnerOutput, ModelRunnerOutputFuture
from pagedllm.worker.memory import KVCachePlan

logger = logging.getLogger(__name__)
_PLACEMENT_TIMEOUT_S = 60.0


class RayWorker:
    """One rank, as a Ray actor (the class is wrapped by ray.remote when the executor starts)."""

    def __init__(self) -> None:
        self.worker: Any = None
        self.rank = self.output_rank = -1

    def node_ip(self) -> str:
        import ray

        return str(ray.util.get_node_ip_address())

    def node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def free_port(self) -> int:
        from pagedllm.distributed.process_group import free_port

        return free_port()

    def pid(self) -> int:
        return os.getpid()

    def start(self, spec: WorkerProcSpec) -> None:
        from pagedllm.logging_config import configure_logging

        configure_logging(spec.log_level, f"%(asctime)s %(levelname)s worker-{spec.rank} %(name)s: %(message)s")
        self.rank, self.output_rank = spec.rank, spec.config.parallel_config.output_rank
        self.worker = start_worker(spec)

    def call(self, method: str, arg: Any) -> Any:
        return call_worker(self.worker, method, arg)

    def execute(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput | None:
        output = self.worker.execute_model(scheduler_output)
        return output if self.rank == self.output_rank else None


class _PendingStep:
    """A step sent to every rank; its result is the output rank's (the others are waited for too, so a
    failed rank is seen at once)."""

    def __init__(self, executor: RayExecutor, refs: list[Any]) -> None:
        self._executor, self._refs = executor, refs

    def result(self) -> ModelRunnerOutput:
        output: ModelRunnerOutput = self._executor._get_all(self._refs)[self._executor.output_rank]
        return output


class RayExecutor(Executor):
    def __init__(self, config: EngineConfig, eos_token_id: int | None) -> None:
        super().__init__(config, eos_token_id)
        ray = _import_ray()
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            address = envs.ray_address()
            logger.info("Ray: %s", f"attaching to the cluster at {address}" if address else "starting a local instance")
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
        world = config.parallel_config.world_size
        self.output_rank = config.parallel_config.output_rank
        cuda = config.device_config.device == "cuda"
        cpus = config.kernel_config.cpu_threads or max(1, int(ray.cluster_resources().get("CPU", 1)) // world)
        bundle: dict[str, float] = {"GPU": 1, "CPU": 1} if cuda else {"CPU": cpus}
        self._placement = _place(ray, world, bundle)
        start = time.perf_counter()
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        actor_cls = ray.remote(RayWorker)
        self.actors = [actor_cls.options(num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0),
                                         scheduling_strategy=PlacementGroupSchedulingStrategy(
                                             self._placement, placement_group_bundle_index=rank)).remote()
                       for rank in range(world)]
        self._finalizer = weakref.finalize(self, _release, ray, list(self.actors), self._placement, self._started_ray)
        ips = self._get_all([a.node_ip.remote() for a in self.actors])
        self.node_ids: list[str] = self._get_all([a.node_id.remote() for a in self.actors])  # each rank's Ray node
        port = ray.get(self.actors[0].free_port.remote())  # a port free on rank 0's machine
        logger.info("Starting %d Ray workers (tensor_parallel_size %d, pipeline_parallel_size %d) on %s", world,
                    config.parallel_config.tensor_parallel_size, config.parallel_config.pipeline_parallel_size,
                    ", ".join(f"rank {r}: {ip} (node {node[:8]})"
                              for r, (ip, node) in enumerate(zip(ips, self.node_ids))))
        # each rank's threads: its bundle's cores (the machine may hold other ranks)
        rank_config = dataclasses.replace(
            config, kernel_config=dataclasses.replace(config.kernel_config, cpu_threads=None if cuda else cpus))
        log_level = logging.getLogger("pagedllm").getEffectiveLevel()
        self._get_all([a.start.remote(WorkerProcSpec(rank_config, eos_token_id, rank, port, None, log_level,
                                                     ips[0], ranks_on_host=self.node_ids.count(self.node_ids[rank])))
                       for rank, a in enumerate(self.actors)])
        logger.info("%d Ray workers ready in %.1f s", world, time.perf_counter() - start)

    def determine_kv_cache(self) -> KVCachePlan:
        """The smallest rank's plan: every rank holds the same block table."""
        return smallest_plan(self._get_all([a.call.remote("determine_kv_cache", None) for a in self.actors]))

    def initialize_cache(self, config: EngineConfig) -> None:
        self.config = config
        self._get_all([a.call.remote("initialize_cache", config) for a in self.actors])

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        return self.execute_model_async(scheduler_output).result()

    def execute_model_async(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutputFuture:
        import ray

        ref = ray.put(scheduler_output)  # serialised once for every rank
        return _PendingStep(self, [a.execute.remote(ref) for a in self.actors])

    def shutdown(self) -> None:
        self._finalizer()

    def _get_all(self, refs: list[Any]) -> list[Any]:
        """Every rank's result (refs[i]: rank i's call), in rank order; a rank whose actor died or
        raised ends the engine."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        pending = list(refs)
        while pending:  # wait for any, so that a failure shows at once rather than after rank 0's call
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(ready)
            except RayActorError as e:
                rank = next(i for i, r in enumerate(refs) if r == ready[0])
                self.shutdown()
                raise WorkerFailure(f"Worker rank {rank} (a Ray actor) died: {e.__class__.__name__}; "
                                    "the engine stops.") from e
            except RayTaskError as e:
                self.shutdown()
                raise e.as_instanceof_cause() from None
        return list(ray.get(refs))


def _release(ray: Any, actors: list[Any], placement: Any, started_ray: bool) -> None:
    """Stop the actors and free their bundles (and the local Ray instance this engine started)."""
    for actor in actors:
        ray.kill(actor)
    ray.util.remove_placement_group(placement)
    if started_ray:
        ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ValueError("distributed_executor_backend='ray' needs Ray: pip install 'ray>=2.40' (on every "
                         "machine of the cluster).") from e
    return ray


def _place(ray: Any, world: int, bundle: dict[str, float]) -> Any:
    """A placement group of one bundle per rank, packed onto as few machines as hold them."""
    from ray.util.placement_group import placement_group

    group = placement_group([dict(bundle) for _ in range(world)], strategy="PACK")
    ready, _ = ray.wait([group.ready()], timeout=_PLACEMENT_TIMEOUT_S)
    if not ready:
        ray.util.remove_placement_group(group)
        raise WorkerFailure(f"The Ray cluster cannot place {world} ranks of {bundle} each within "
                            f"{_PLACEMENT_TIMEOUT_S:.0f} s; it has {ray.cluster_resources()}.")
    return group
