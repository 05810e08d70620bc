"""Executors run the workers: in this process, in other processes, or on other machines."""
from __future__ import annotations

from abc import ABC, abstractmethod

from pagedllm.config import EngineConfig
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.outputs import ModelRunnerOutput, ModelRunnerOutputFuture


class Executor(ABC):
    def __init__(self, config: EngineConfig, eos_token_id: int | None) -> None:
        self.config = config
        self.eos_token_id = eos_token_id

    @abstractmethod
    def initialize(self) -> int:
        """Load the model, size and allocate the KV cache; return the number of KV blocks."""

    @abstractmethod
    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        """Run one step on the workers and return the first worker's result."""

    @abstractmethod
    def execute_model_async(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutputFuture:
        """Launch one step and return without waiting for its result (asynchronous scheduling)."""

    def shutdown(self) -> None:
        """Release the workers."""


_EXECUTORS = {"uniproc": "pagedllm.executor.uniproc:UniprocExecutor"}


def get_executor_class(name: str = "uniproc") -> type[Executor]:
    import importlib

    if name not in _EXECUTORS:
        raise ValueError(f"Unknown executor {name!r}; supported: {sorted(_EXECUTORS)}.")
    module, cls = _EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)
