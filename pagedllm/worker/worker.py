"""A worker owns one device: it loads the model, sizes and allocates the KV cache, and runs steps."""
from __future__ import annotations

import logging
import time

import torch

from pagedllm.attention.registry import get_attn_backend
from pagedllm.config import EngineConfig
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.outputs import ModelRunnerOutput
from pagedllm.platforms.base import get_platform
from pagedllm.worker.kv_cache import KVCacheSpec, allocate_kv_caches, determine_num_blocks
from pagedllm.worker.model_runner import ModelRunner

logger = logging.getLogger(__name__)


class Worker:
    def __init__(self, config: EngineConfig, eos_token_id: int | None) -> None:
        self.config = config
        self.eos_token_id = eos_token_id
        self.platform = get_platform(config.device_config.device)
        self.platform.set_num_threads()
        self.device = torch.device(self.platform.device_name)
        self.runner: ModelRunner | None = None

    def load_model(self) -> None:
        from pagedllm.models.loader import load_model

        torch.manual_seed(self.config.model_config.seed)
        start = time.perf_counter()
        self.model = load_model(self.config.model_config, self.platform.device_name)
        logger.info("Loaded %s in %.1f s", self.config.model_config.architecture, time.perf_counter() - start)

    def determine_num_blocks(self) -> int:
        spec = KVCacheSpec.from_configs(self.config.model_config, self.config.cache_config)
        return determine_num_blocks(spec, self.config.cache_config, self.platform.available_memory_bytes(),
                                    self.platform.device_name)

    def initialize_cache(self, num_blocks: int) -> None:
        cfg = self.config
        spec = KVCacheSpec.from_configs(cfg.model_config, cfg.cache_config)
        backend = get_attn_backend(self.platform.device_name, self.platform.attention_backend_name())
        kv_caches = allocate_kv_caches(spec, num_blocks, backend, self.device)
        logger.info("KV cache: %d blocks of %d tokens (%.1f MiB)", num_blocks, spec.block_size,
                    num_blocks * spec.bytes_per_block / 2**20)
        self.runner = ModelRunner(
            self.model, backend, kv_caches,
            vocab_size=cfg.model_config.hf_config.vocab_size,
            eos_token_id=self.eos_token_id,
            block_size=spec.block_size,
            max_num_reqs=cfg.scheduler_config.max_num_seqs,
            max_model_len=cfg.model_config.max_model_len,
            device=self.device,
        )

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        assert self.runner is not None, "initialize_cache() must run before execute_model()"
        return self.runner.execute_model(scheduler_output)
