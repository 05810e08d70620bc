"""A worker owns one device: it loads the model, sizes and allocates the KV cache, and runs steps.

On CUDA the KV cache gets what a profiled worst-case step leaves of gpu_memory_utilization x the
card's memory (worker/memory.py). Unless enforce_eager is set, decode steps are captured as CUDA
graphs of the whole forward at start-up (worker/cuda_graphs.py), and steps with prompt tokens
as graphs of the pieces between attention calls (worker/piecewise_graphs.py).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from typing import Any

import torch

from pagedllm.attention.base import AttentionBackend, AttentionBackendOptions
from pagedllm.config import EngineConfig, ModelConfig
from pagedllm.core.scheduler_output import SchedulerOutput
from pagedllm.distributed.parallel_state import (
    SINGLE_RANK,
    SINGLE_STAGE,
    PipelineStage,
    TensorParallelGroup,
    use_parallel,
)
from pagedllm.outputs import ModelRunnerOutput, ModelRunnerOutputFuture
from pagedllm.platforms.base import get_platform
from pagedllm.sample.sampler import Sampler
from pagedllm.spec_decode.hidden_taps import tap_layer_inputs
from pagedllm.spec_decode.proposer import ProposerRuntime
from pagedllm.spec_decode.speculator import Speculator
from pagedllm.worker.cuda_graphs import CudaGraphRunner, default_graph_sizes, graph_pool_estimate
from pagedllm.worker.input_buffers import InputBuffers
from pagedllm.worker.kv_cache import KVCacheSpec, allocate_kv_caches, determine_num_blocks
from pagedllm.worker.memory import (
    KVCachePlan,
    MemoryProfile,
    in_use_bytes,
    kv_cache_budget,
    plan_kv_cache,
    profile_step_memory,
)
from pagedllm.worker.model_runner import ModelRunner
from pagedllm.worker.piecewise_graphs import PiecewiseGraphRunner, default_piecewise_sizes, static_buffer_bytes

logger = logging.getLogger(__name__)


class Worker:
    """Owns one device. Life: load_model() -> determine_kv_cache() (the plan the engine builds its
    final config from) -> initialize_cache(final config) -> execute_model(...) per step."""

    def __init__(self, config: EngineConfig, eos_token_id: int | None,
                 tensor_parallel: TensorParallelGroup = SINGLE_RANK, stage: PipelineStage = SINGLE_STAGE,
                 ranks_on_host: int = 1) -> None:
        """tensor_parallel: the ranks this worker's layers are split over, `stage`: which of the
        model's layers it holds (executor/worker_proc.py joins the ranks); the defaults are the
        whole model on this one device. ranks_on_host: workers sharing this host's memory (the
        CPU's KV cache takes its share of what is free)."""
        self.config = config
        self.eos_token_id = eos_token_id
        self.tp, self.stage = tensor_parallel, stage
        self.ranks_on_host = ranks_on_host
        kernel_config = config.kernel_config
        self.platform = get_platform(config.device_config.device)
        self.platform.set_num_threads(kernel_config)
        self.device = torch.device(self.platform.device_name)
        self.is_cuda = self.device.type == "cuda"
        options = AttentionBackendOptions(max_num_seqs=config.scheduler_config.max_num_seqs,
                                          max_model_len=config.model_config.max_model_len)
        self.backend = self.platform.make_attention_backend(kernel_config, options)
        # A draft model's own instance: a backend keeps per-shape state (the split-K workspace)
        # that the target's captured graphs hold on to.
        self.draft_backend = (self.platform.make_attention_backend(kernel_config, options)
                              if self._draft_model_config() is not None else None)
        self.layer_kernels = self.platform.layer_kernels(kernel_config, self.backend.capabilities)
        self.sampler = Sampler(inverse_cdf=self.platform.inverse_cdf_stage(kernel_config))
        self.runner: ModelRunner | None = None
        self.draft_model: torch.nn.Module | None = None  # speculative decoding's draft model or head
        self.aux_hidden: torch.Tensor | None = None  # EAGLE-3: the target layers' inputs (hidden_taps.py)
        self.head_step: torch.nn.Module | None = None  # EAGLE: the head as the draft graphs run it
        self.weights_bytes = 0
        self.startup_times: dict[str, float] = {}  # stage -> seconds (load, profile, graphs)
        self.graph_pool_bytes = 0  # memory the captured graphs hold (all share one pool)
        logger.info("Kernels: attention backend %s, ops %s, sampler stage %s%s", self.backend.name,
                    self.layer_kernels.ops.value, "fused" if self.sampler.inverse_cdf else "torch",
                    "" if self.is_cuda else f", {torch.get_num_threads()} CPU threads")

    def load_model(self) -> None:
        from pagedllm.models.loader import load_model

        torch.manual_seed(self.config.model_config.seed)
        before = torch.cuda.memory_allocated(self.device) if self.is_cuda else 0
        start = time.perf_counter()
        with use_parallel(self.tp, self.stage):
            self.model = load_model(self.config.model_config, self.platform.device_name, self.layer_kernels)
        draft_config = self._draft_model_config()
        if draft_config is not None:
            self.draft_model = load_model(draft_config, self.platform.device_name, self.layer_kernels)
            self._bind_draft_head(draft_config)
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
            self.weights_bytes = torch.cuda.memory_allocated(self.device) - before
        self.startup_times["load"] = time.perf_counter() - start
        if self.is_cuda:  # the loader logged the weights' size; this is what they take on the card
            logger.info("Weights take %.0f MiB on %s", self.weights_bytes / 2**20, self.device)
        logger.info("Linear layers: %s", _linear_methods(self.model))

    def _bind_draft_head(self, draft_config: ModelConfig) -> None:
        """An EAGLE head reads the target: its embedding (and lm_head), and for EAGLE-3 the inputs
        of three of its layers, tapped into a buffer every forward writes (before any capture)."""
        from pagedllm.models.eagle import Eagle3LlamaForCausalLM, EagleLlamaForCausalLM, HeadStep, eagle3_aux_layers

        if not isinstance(self.draft_model, (EagleLlamaForCausalLM, Eagle3LlamaForCausalLM)):
            return
        self.draft_model.bind_target(self.model)
        self.head_step = HeadStep(self.draft_model, self.config.scheduler_config.max_num_batched_tokens)
        spec = self.config.speculative_config
        assert spec is not None
        if spec.method == "eagle3":
            layers = eagle3_aux_layers(draft_config.hf_config, self.config.model_config.hf_config)
            self.aux_hidden = tap_layer_inputs(self.model, layers, self.config.scheduler_config.max_num_batched_tokens)
            logger.info("EAGLE-3 reads the inputs of target layers %s", list(layers))

    def _draft_model_config(self) -> ModelConfig | None:
        spec = self.config.speculative_config
        return spec.draft_model_config if spec is not None else None

    def _spec(self) -> KVCacheSpec:
        """The target's KV layout; a draft model's cache, on the same blocks, adds its bytes."""
        spec = KVCacheSpec.from_configs(self.config.model_config, self.config.cache_config, self.tp.size, self.stage)
        draft = self._draft_spec()
        if draft is None:
            return spec
        return dataclasses.replace(spec, extra_bytes_per_block=draft.bytes_per_block)

    def _draft_spec(self) -> KVCacheSpec | None:
        draft_config = self._draft_model_config()
        return None if draft_config is None else KVCacheSpec.from_configs(draft_config, self.config.cache_config)

    def determine_kv_cache(self) -> KVCachePlan:
        """How many KV blocks this device holds and the context they fit: from the override or
        byte budget, or (CUDA) from what a profiled worst-case step leaves of the card."""
        cc, max_model_len = self.config.cache_config, self.config.model_config.max_model_len
        if not self.is_cuda or cc.num_gpu_blocks_override is not None or cc.kv_cache_memory is not None:
            available = self.platform.available_memory_bytes() // (1 if self.is_cuda else self.ranks_on_host)
            num_blocks = determine_num_blocks(self._spec(), cc, available,
                                              self.platform.device_name, self.config.scheduler_config.max_num_seqs,
                                              max_model_len)
            return KVCachePlan(num_blocks, max_model_len, num_blocks * cc.block_size / max_model_len)
        return self._plan_from_profile()

    def _plan_from_profile(self) -> KVCachePlan:
        cfg, spec = self.config, self._spec()
        start = time.perf_counter()
        sc = cfg.scheduler_config
        logger.info("Profiling the memory of a worst-case step (%d tokens, %d sampled rows) to size the KV cache",
                    sc.max_num_batched_tokens, sc.max_num_seqs)
        common = dict(max_num_seqs=self._max_sampled_rows(), max_model_len=cfg.model_config.max_model_len,
                      vocab_size=cfg.model_config.hf_config.vocab_size, device=self.device, sampler=self.sampler)
        peak = profile_step_memory(self.model, self.backend, spec,
                                   max_num_batched_tokens=sc.max_num_batched_tokens, **common)
        graph_bytes = 0
        sizes = self._graph_sizes()
        if sizes:
            graph_peak = profile_step_memory(self.model, self.backend, spec, max_num_batched_tokens=max(sizes),
                                             decode=True, **common)
            piecewise_sizes = self._piecewise_sizes()
            if piecewise_sizes:
                # One pool serves both kinds of graph, captured one after the other.
                graph_peak = max(graph_peak, profile_step_memory(
                    self.model, self.backend, spec, max_num_batched_tokens=max(piecewise_sizes), sample=False,
                    **common))
                graph_bytes += self._piecewise_buffer_bytes(max(piecewise_sizes))
            verify_sizes = self._verify_graph_sizes()
            verify_tokens = max(verify_sizes) * self._verify_len() if verify_sizes else 0
            if verify_tokens > max(piecewise_sizes, default=0):  # more than the piecewise profile covered
                graph_peak = max(graph_peak, profile_step_memory(
                    self.model, self.backend, spec, max_num_batched_tokens=verify_tokens, sample=False, **common))
            graph_bytes += graph_pool_estimate(graph_peak) + self._verify_output_bytes(verify_sizes)
        profile = MemoryProfile(self.platform.total_memory_bytes(), in_use_bytes(self.device), self.weights_bytes,
                                peak, graph_bytes)
        budget = kv_cache_budget(profile, cfg.cache_config.gpu_memory_utilization)
        plan = plan_kv_cache(budget, spec.bytes_per_block, spec.block_size, cfg.model_config.max_model_len,
                             cfg.model_config.max_model_len_explicit)
        self.startup_times["profile"] = time.perf_counter() - start
        logger.info("Memory: %s; KV cache gets %.0f MiB (gpu_memory_utilization %.2f): %d blocks of %d tokens, "
                    "max concurrency %.1fx at %d tokens per request", profile.describe(), budget / 2**20,
                    cfg.cache_config.gpu_memory_utilization, plan.num_blocks, spec.block_size,
                    plan.max_concurrency, plan.max_model_len)
        return plan

    def _max_sampled_rows(self) -> int:
        """The most rows a step samples: one per request, or with speculation k + 1 per request
        (never more than the step's tokens)."""
        sc, spec = self.config.scheduler_config, self.config.speculative_config
        if spec is None:
            return sc.max_num_seqs
        return min(sc.max_num_seqs * (spec.num_speculative_tokens + 1), sc.max_num_batched_tokens)

    def _graph_sizes(self) -> list[int]:
        """Decode batch sizes to capture; empty when steps run eagerly."""
        cfg = self.config
        if not self.platform.supports_cuda_graphs() or cfg.device_config.enforce_eager:
            return []
        if self.stage.size > 1:
            logger.info("Pipeline stages run eagerly: their transfers between stages are not captured in CUDA graphs.")
            return []
        if not self.backend.capabilities.cuda_graphs:
            logger.info("Attention backend %r cannot be captured in CUDA graphs; decode runs eagerly.",
                        self.backend.name)
            return []
        sc = cfg.scheduler_config
        limit = min(sc.max_num_seqs, sc.max_num_batched_tokens)
        sizes = cfg.device_config.cuda_graph_sizes or default_graph_sizes(limit)
        return sorted({s for s in sizes if s <= limit})

    def _verify_output_bytes(self, sizes: list[int]) -> int:
        """The hidden states each verify graph keeps as its output, all sizes together."""
        from pagedllm.models.common import to_torch_dtype

        model_config = self.config.model_config
        row = model_config.hf_config.hidden_size * to_torch_dtype(model_config.dtype).itemsize
        return sum(sizes) * self._verify_len() * row

    def _verify_len(self) -> int:
        """Tokens a request checks in a verify step: its last token and k drafts."""
        spec = self.config.speculative_config
        return 1 if spec is None else spec.num_speculative_tokens + 1

    def _verify_graph_sizes(self) -> list[int]:
        """Batch sizes of speculative decoding's verify steps to capture whole: the decode sizes
        whose k + 1 tokens a request fit a step; empty without speculation or graphs."""
        q = self._verify_len()
        if q == 1:
            return []
        return [s for s in self._graph_sizes() if s * q <= self.config.scheduler_config.max_num_batched_tokens]

    def _piecewise_sizes(self) -> list[int]:
        """Token counts of steps with prompt tokens to capture in pieces; empty when they run eagerly."""
        if self.config.device_config.cuda_graph_mode != "full_and_piecewise" or not self._graph_sizes():
            return []
        return default_piecewise_sizes(self.config.scheduler_config.max_num_batched_tokens)

    def _piecewise_buffer_bytes(self, max_tokens: int) -> int:
        """The static q/k/v buffers of the piecewise graphs: the target's, and a draft model's own
        (their attention's shapes: the cache layout's, e.g. MLA's one latent row)."""
        from pagedllm.models.common import to_torch_dtype

        total = 0
        for config in (self.config.model_config, self._draft_model_config()):
            if config is None:
                continue
            tp_size = self.tp.size if config is self.config.model_config else 1
            layout = KVCacheSpec.from_configs(config, self.config.cache_config, tp_size,
                                              self.stage if config is self.config.model_config else SINGLE_STAGE)
            heads = config.hf_config.num_attention_heads // tp_size
            total += static_buffer_bytes(max_tokens, heads, layout.num_kv_heads,
                                         layout.head_size, to_torch_dtype(config.dtype))
        return total

    def initialize_cache(self, config: EngineConfig) -> None:
        """Allocate the KV cache and capture the graphs under the engine's final config (built from
        determine_kv_cache's plan: its block count and max_model_len)."""
        assert config.cache_config.num_blocks is not None, "the final config has the block count"
        self.config = cfg = config
        num_blocks = config.cache_config.num_blocks
        self.backend.configure(cfg.scheduler_config.max_num_seqs, cfg.model_config.max_model_len)
        spec = self._spec()
        kv_caches = allocate_kv_caches(spec, num_blocks, self.backend, self.device)
        max_model_len = cfg.model_config.max_model_len
        num_tokens = num_blocks * spec.block_size
        logger.info("KV cache: %d blocks of %d tokens = %d tokens, %.1f MiB on %s (%.1f requests of max_model_len "
                    "%d at once)", num_blocks, spec.block_size, num_tokens, num_blocks * spec.bytes_per_block / 2**20,
                    self.device, num_tokens / max_model_len, max_model_len)
        max_num_reqs = cfg.scheduler_config.max_num_seqs
        max_blocks = -(-max_model_len // spec.block_size)
        buffers = graphs = piecewise = verify_graphs = None
        draft_caches = self._allocate_draft_caches(num_blocks)
        draft_graphs: tuple[CudaGraphRunner | None, PiecewiseGraphRunner | None] = (None, None)
        if self.is_cuda:
            buffers = InputBuffers(cfg.scheduler_config.max_num_batched_tokens, max_num_reqs, max_blocks, self.device)
            sizes = self._graph_sizes()
            if sizes:
                pool = torch.cuda.graph_pool_handle()
                torch.cuda.empty_cache()  # so the count below is the pool, not the warm-ups' cached blocks
                reserved = torch.cuda.memory_reserved(self.device)
                piecewise_sizes = self._piecewise_sizes()
                logger.info("Capturing CUDA graphs: decode batch sizes %d..%d%s", sizes[0], sizes[-1],
                            f", prompt steps of {piecewise_sizes[0]}..{piecewise_sizes[-1]} tokens in pieces"
                            if piecewise_sizes else "")
                start = time.perf_counter()
                graphs, piecewise = self._capture(self.model, self.backend, kv_caches, buffers, pool)
                verify_sizes = self._verify_graph_sizes()
                if verify_sizes:
                    verify_graphs = CudaGraphRunner(self.model, self.backend, kv_caches, buffers, verify_sizes,
                                                    max_model_len=max_model_len, block_size=spec.block_size,
                                                    query_len=self._verify_len())
                    verify_graphs.capture(pool)
                if draft_caches is not None:  # the draft's passes, after the target's (the pool's largest)
                    draft = self.head_step or self.draft_model
                    assert draft is not None and self.draft_backend is not None
                    draft_graphs = self._capture(draft, self.draft_backend, draft_caches, buffers, pool)
                self.startup_times["cuda_graphs"] = time.perf_counter() - start
                torch.cuda.empty_cache()
                self.graph_pool_bytes = torch.cuda.memory_reserved(self.device) - reserved
                logger.info("CUDA graphs hold %.0f MiB", self.graph_pool_bytes / 2**20)
        self.runner = ModelRunner(
            self.model, self.backend, kv_caches,
            vocab_size=cfg.model_config.hf_config.vocab_size,
            eos_token_id=self.eos_token_id,
            block_size=spec.block_size,
            max_num_reqs=max_num_reqs,
            max_model_len=max_model_len,
            device=self.device,
            sampler=self.sampler,
            buffers=buffers,
            graphs=graphs,
            piecewise=piecewise,
            speculator=self._make_speculator(draft_caches, buffers, *draft_graphs),
            token_mask=self.platform.token_mask_stage(cfg.kernel_config),
            verify_graphs=verify_graphs,
        )

    def _capture(self, model: torch.nn.Module, backend: AttentionBackend, kv_caches: list[torch.Tensor],
                 buffers: InputBuffers, pool: Any) -> tuple[CudaGraphRunner, PiecewiseGraphRunner | None]:
        """A model's decode graphs and (first: its largest size frees the most memory for the
        rest) piecewise graphs, captured into `pool`."""
        cfg = self.config
        block_size = cfg.cache_config.block_size
        piecewise = None
        piecewise_sizes = self._piecewise_sizes()
        if piecewise_sizes:
            piecewise = PiecewiseGraphRunner(model, backend, kv_caches, buffers, piecewise_sizes, block_size=block_size)
            piecewise.capture(pool)
        graphs = CudaGraphRunner(model, backend, kv_caches, buffers, self._graph_sizes(),
                                 max_model_len=cfg.model_config.max_model_len, block_size=block_size)
        graphs.capture(pool)
        return graphs, piecewise

    def _allocate_draft_caches(self, num_blocks: int) -> list[torch.Tensor] | None:
        """A draft model's KV cache, on the target's block ids."""
        draft_spec = self._draft_spec()
        if draft_spec is None:
            return None
        assert self.draft_backend is not None
        self.draft_backend.configure(self.config.scheduler_config.max_num_seqs, self.config.model_config.max_model_len)
        caches = allocate_kv_caches(draft_spec, num_blocks, self.draft_backend, self.device)
        logger.info("Draft model KV cache: %.1f MiB on the target's %d blocks",
                    num_blocks * draft_spec.bytes_per_block / 2**20, num_blocks)
        return caches

    def _make_speculator(self, draft_caches: list[torch.Tensor] | None, buffers: InputBuffers | None,
                         draft_graphs: CudaGraphRunner | None,
                         draft_piecewise: PiecewiseGraphRunner | None) -> Speculator | None:
        cfg, spec = self.config, self.config.speculative_config
        if spec is None:
            return None
        logger.info("Speculative decoding: %s, up to %d draft tokens a step%s", spec.method,
                    spec.num_speculative_tokens, "" if spec.disable_by_batch_size is None else
                    f", off at {spec.disable_by_batch_size}+ running requests")
        runtime = ProposerRuntime(self.device, self.draft_backend or self.backend, None, cfg.cache_config.block_size,
                                  cfg.model_config.max_model_len, cfg.scheduler_config.max_num_batched_tokens,
                                  self.draft_model, draft_caches, buffers, draft_graphs, draft_piecewise,
                                  self.aux_hidden, self.head_step)
        return Speculator(spec, self.sampler, runtime, self.platform.rejection_stage(cfg.kernel_config))

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        assert self.runner is not None, "initialize_cache() must run before execute_model()"
        return self.runner.execute_model(scheduler_output)

    def execute_model_async(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutputFuture:
        assert self.runner is not None, "initialize_cache() must run before execute_model()"
        return self.runner.execute_model_async(scheduler_output)


def _linear_methods(model: torch.nn.Module) -> str:
    """How many linear layers each method runs, e.g. '211 PanelLinearMethod, 1 OneDnnLinearMethod'."""
    from pagedllm.layers.linear import Linear

    counts = Counter(type(m.method).__name__ for m in model.modules() if isinstance(m, Linear))
    return ", ".join(f"{n} {name}" for name, n in counts.most_common()) or "none"
