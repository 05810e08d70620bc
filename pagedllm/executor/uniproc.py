"""One worker in this process: the default for a single device."""
from __future__ import annotations

from pagedllm.config import EngineConfig
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.executor.base import Executor
from pagedllm.outputs import ModelRunnerOutput, ModelRunnerOutputFuture
from pagedllm.worker.memory import KVCachePlan
from pagedllm.worker.worker import Worker


class UniprocExecutor(Executor):
    def determine_kv_cache(self) -> KVCachePlan:
        self.worker = Worker(self.config, self.eos_token_id)
        self.worker.load_model()
        return self.worker.determine_kv_cache()

    def initialize_cache(self, config: EngineConfig) -> None:
        self.config = config
        self.worker.initialize_cache(config)

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        return self.worker.execute_model(scheduler_output)

    def execute_model_async(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutputFuture:
        return self.worker.execute_model_async(scheduler_output)
