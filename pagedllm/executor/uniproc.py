"""One worker in this process: the default for a single device."""
from __future__ import annotations

from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.executor.base import Executor
from pagedllm.outputs import ModelRunnerOutput, ModelRunnerOutputFuture
from pagedllm.worker.worker import Worker


class UniprocExecutor(Executor):
    def initialize(self) -> int:
        self.worker = Worker(self.config, self.eos_token_id)
        self.worker.load_model()
        num_blocks = self.worker.determine_num_blocks()
        self.config = self.worker.config  # max_model_len may have been lowered to what the KV cache fits
        self.worker.initialize_cache(num_blocks)
        return num_blocks

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        return self.worker.execute_model(scheduler_output)

    def execute_model_async(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutputFuture:
        return self.worker.execute_model_async(scheduler_output)
