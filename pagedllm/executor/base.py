"""Executors run the workers: in this process, in other processes, or on other machines."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from pagedllm.config import EngineConfig
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.outputs import ModelRunnerOutput, ModelRunnerOutputFuture
from pagedllm.registry import LazyRegistry

if TYPE_CHECKING:
    from pagedllm.worker.memory import KVCachePlan


class WorkerFailure(RuntimeError):
    """A worker of several ranks died or could not be reached; the engine cannot go on."""


class Executor(ABC):
    def __init__(self, config: EngineConfig, eos_token_id: int | None) -> None:
        self.config = config
        self.eos_token_id = eos_token_id

    @abstractmethod
    def determine_kv_cache(self) -> KVCachePlan:
        """Load the model and size the KV cache: the block count and the context it fits (the
        smallest over the workers)."""

    @abstractmethod
    def initialize_cache(self, config: EngineConfig) -> None:
        """Allocate the KV cache (and capture graphs) under the engine's final config, which the
        engine built from determine_kv_cache's plan."""

    @abstractmethod
    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        """Run one step on the workers and return the first worker's result."""

    @abstractmethod
    def execute_model_async(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutputFuture:
        """Launch one step and return without waiting for its result (asynchronous scheduling)."""

    def shutdown(self) -> None:
        """Release the workers."""


def smallest_plan(plans: list[KVCachePlan]) -> KVCachePlan:
    """The ranks' KV-cache plans as one: every rank holds the same block table, so the smallest
    rank's block count and context."""
    from pagedllm.worker.memory import KVCachePlan

    smallest = min(plans, key=lambda p: p.num_blocks)
    return KVCachePlan(smallest.num_blocks, min(p.max_model_len for p in plans), smallest.max_concurrency)


# vLLM's distributed_executor_backend names (config.EXECUTOR_BACKENDS)
EXECUTORS: LazyRegistry[type[Executor]] = LazyRegistry("executor", {
    "uni": "pagedllm.executor.uniproc:UniprocExecutor",
    "mp": "pagedllm.executor.multiproc:MultiprocExecutor",
    "ray": "pagedllm.executor.ray_executor:RayExecutor",
})


def get_executor_class(name: str = "uni") -> type[Executor]:
    return EXECUTORS.get(name)
