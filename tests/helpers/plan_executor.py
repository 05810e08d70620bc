"""An executor that runs no model: it sizes the KV cache as a test tells it and keeps the final
config the engine hands back, to check what start-up builds from its plan."""
from __future__ import annotations

from pagedllm.config import EngineConfig
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.executor.base import Executor
from pagedllm.outputs import ModelRunnerOutput, ModelRunnerOutputFuture
from pagedllm.worker.memory import KVCachePlan


class PlanExecutor(Executor):
    plan = KVCachePlan(num_blocks=7, max_model_len=100, max_concurrency=1.1)
    final: EngineConfig | None = None

    def determine_kv_cache(self) -> KVCachePlan:
        return self.plan

    def initialize_cache(self, config: EngineConfig) -> None:
        type(self).final = config

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        raise NotImplementedError("PlanExecutor runs no model")

    def execute_model_async(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutputFuture:
        raise NotImplementedError("PlanExecutor runs no model")
