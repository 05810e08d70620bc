"""Engine configuration: one frozen dataclass per concern, validated once.

EngineArgs (engine/arg_utils.py) builds the first EngineConfig from the user's arguments. Start-up
sizes the KV cache and may lower max_model_len to what it fits; the engine then builds the final
EngineConfig from that result (`EngineConfig.with_kv_cache`). No config object is changed after
it is built.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pagedllm.generation_config import SamplingDefaults
from pagedllm.spec_decode.config import SpeculativeConfig

_DTYPES = ("float32", "bfloat16", "float16")
_LOAD_FORMATS = ("auto", "dummy")


@dataclass(frozen=True)
class ModelConfig:
    model: str  # the folder (HF) or the .gguf file's folder
    gguf_file: str | None  # file name inside `model` when loading GGUF
    tokenizer: str | None
    hf_config: Any  # transformers.PretrainedConfig
    dtype: str  # one of _DTYPES
    max_model_len: int
    seed: int = 0
    # "auto": weights from the checkpoint; "dummy": random weights built in place (benchmarks)
    load_format: str = "auto"
    # whether the user chose max_model_len: then a KV cache too small for it is an error, while a
    # derived one is lowered to what fits (with a warning)
    max_model_len_explicit: bool = False
    # what requests get for the sampling parameters they leave unset (--generation-config)
    sampling_defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    # how the checkpoint's quantized weights run: "gguf" (a GGUF file's blocks kept as stored, run
    # by the quantized CPU kernels), or None (unquantized; a GGUF file's dequantized at load)
    quantization: str | None = None

    def __post_init__(self) -> None:
        if self.load_format not in _LOAD_FORMATS:
            raise ValueError(f"load_format must be one of {_LOAD_FORMATS}, got {self.load_format!r}.")

    @property
    def architecture(self) -> str:
        archs = getattr(self.hf_config, "architectures", None) or []
        if not archs:
            raise ValueError(f"The model config of {self.model} names no architecture.")
        return archs[0]


@dataclass(frozen=True)
class CacheConfig:
    block_size: int = 16
    enable_prefix_caching: bool = True
    num_gpu_blocks_override: int | None = None  # number of KV blocks on any device
    # the KV blocks start-up allocated: None until then (the final config of EngineConfig.with_kv_cache)
    num_blocks: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_cache_memory: int | None = None  # bytes; overrides gpu_memory_utilization when given
    # "sha256" resists crafted collisions between users' prefixes; "builtin" is Python's hash, faster
    prefix_caching_hash_algo: str = "sha256"
    # The KV cache's element type ("float32", "bfloat16", "float16"); None: the model's dtype
    # (EngineArgs resolves vLLM's kv_cache_dtype into it)
    cache_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a positive power of two, got {self.block_size}.")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}.")
        if self.num_gpu_blocks_override is not None and self.num_gpu_blocks_override < 1:
            raise ValueError("num_gpu_blocks_override must be at least 1.")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"num_blocks must be at least 1, got {self.num_blocks}.")
        if self.prefix_caching_hash_algo not in ("sha256", "builtin"):
            raise ValueError(f"prefix_caching_hash_algo must be 'sha256' or 'builtin', got "
                             f"{self.prefix_caching_hash_algo!r}.")


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    max_model_len: int = 2048
    # Schedule step N+1 while step N runs on the device (its sampled tokens stay there as the
    # next inputs); the engine reads step N's result after launching step N+1.
    async_scheduling: bool = False

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be at least 1, got {self.max_num_seqs}.")
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be at least 1, got {self.max_num_batched_tokens}.")


EXECUTOR_BACKENDS = ("uni", "mp", "ray")


@dataclass(frozen=True)
class ParallelConfig:
    """How the model is split over ranks (vLLM's names): tensor parallelism splits each layer's
    weights (one all-reduce per attention and per MLP), pipeline parallelism splits the layers into
    stages, and the executor runs one worker per rank. Only the executors, the workers and the
    parallel layers read it."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    # "uni": the one worker in the engine's process; "mp": a worker process per rank on this host;
    # "ray": the workers as Ray actors, on the machines of a Ray cluster
    distributed_executor_backend: str = "uni"

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        _check_choice("distributed_executor_backend", self.distributed_executor_backend, EXECUTOR_BACKENDS)
        if self.world_size > 1 and self.distributed_executor_backend == "uni":
            raise ValueError(f"distributed_executor_backend='uni' runs one rank; {self.world_size} ranks "
                             "(tensor_parallel_size x pipeline_parallel_size) need 'mp' or 'ray'.")

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def output_rank(self) -> int:
        """The rank whose step output the executor reads: the first of the last pipeline stage."""
        return (self.pipeline_parallel_size - 1) * self.tensor_parallel_size


CUDA_GRAPH_MODES = ("full_and_piecewise", "full_decode_only")


@dataclass(frozen=True)
class DeviceConfig:
    device: str = "cpu"  # resolved from "auto" by the platform
    # CUDA: True runs every step eagerly (no CUDA graphs); no effect on the CPU
    enforce_eager: bool = False
    # decode batch sizes captured as CUDA graphs; None: 1, 2, 4, then multiples of 8 (16 past 256)
    # up to max_num_seqs
    cuda_graph_sizes: tuple[int, ...] | None = None
    # "full_and_piecewise": decode-only steps replay a graph of the whole forward, steps with prompt
    # tokens replay graphs of the pieces between attention calls (vLLM's default mode);
    # "full_decode_only": steps with prompt tokens run eagerly
    cuda_graph_mode: str = "full_and_piecewise"

    def __post_init__(self) -> None:
        if self.cuda_graph_sizes is not None and any(s < 1 for s in self.cuda_graph_sizes):
            raise ValueError(f"cuda_graph_sizes must be positive, got {self.cuda_graph_sizes}.")
        if self.cuda_graph_mode not in CUDA_GRAPH_MODES:
            raise ValueError(f"cuda_graph_mode must be one of {', '.join(CUDA_GRAPH_MODES)}, "
                             f"got {self.cuda_graph_mode!r}.")


CPU_GEMMS = ("auto", "onednn", "torch")
SKINNY_GEMM_MODES = ("auto", "on", "off")


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A KernelConfig field whose help text (and choices) the CLI flag and the README share."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class KernelConfig:
    """Which kernels and fused paths run: every choice the engine offers between implementations
    of the same computation. Each field is an engine argument and a CLI flag of the same name
    (README, "Kernel choices"); a PAGEDLLM_<FIELD> environment variable fills its default
    (pagedllm/envs.py, the one module that reads the environment). The platform resolves these
    once, at load, into what each layer, the attention backend and the sampler run
    (platforms/base.py); nothing re-decides per call."""

    attention_backend: str | None = _option(
        None, "attention backend (torch, cpu_paged, triton); default: the platform's (cpu_paged on the CPU, "
              "triton on CUDA when Triton is on and importable, else torch)")
    cpu_gemm: str = _option(
        "auto", "CPU linear layers: auto packs float32 weights for our AVX-512 panel GEMM where it is built and "
                "others for oneDNN; onednn packs every weight for oneDNN; torch keeps plain weights and "
                "torch.matmul", CPU_GEMMS)
    triton: bool = _option(
        True, "CUDA: Triton kernels (norms, activation, rotary, sampler stage, skinny GEMM, attention); off runs "
              "torch ops, cuBLAS and the torch attention backend")
    skinny_gemm: str = _option(
        "auto", "CUDA: our Triton GEMM for steps of at most 16 rows; auto takes bf16/fp16 weights of 16M "
                "elements and up, on every weight it has a launch shape for, off none (cuBLAS)", SKINNY_GEMM_MODES)
    gemm_pdl: bool = _option(
        True, "CUDA: launch the skinny GEMMs, and decode attention before them, with programmatic dependent "
              "launch, so each loads its weights while the kernel before it finishes")
    fold_norms: bool = _option(
        True, "CUDA: fold each decoder layer's RMSNorm weights into the projection that reads them, where the "
              "attention backend and activation apply the norm's scale (two launches a layer fewer)")
    decode_rotary: bool = _option(
        True, "CUDA (triton backend): decode steps rotate q/k and write the KV cache inside the attention "
              "kernel, one launch a layer instead of two")
    triton_sampler: bool = _option(
        True, "CUDA: the sampler's inverse-CDF stage as two Triton launches instead of torch ops")
    cpu_kernels: bool = _option(
        True, "CPU: our C++ kernels (attention, GEMM, norms, rotary, activation, sampler stage), compiled on "
              "first use; off runs torch ops only")
    cpu_threads: int | None = _option(
        None, "CPU: intra-op threads; default: every core this process may run on")

    def __post_init__(self) -> None:
        _check_choice("cpu_gemm", self.cpu_gemm, CPU_GEMMS)
        _check_choice("skinny_gemm", self.skinny_gemm, SKINNY_GEMM_MODES)
        if self.attention_backend is not None:
            from pagedllm.attention.registry import BACKENDS

            _check_choice("attention_backend", self.attention_backend, tuple(BACKENDS.names()))
            if self.attention_backend == "triton" and not self.triton:
                raise ValueError("attention_backend='triton' needs triton=True.")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {self.cpu_threads}.")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")


@dataclass(frozen=True)
class EngineConfig:
    model_config: ModelConfig
    cache_config: CacheConfig
    scheduler_config: SchedulerConfig
    device_config: DeviceConfig
    kernel_config: KernelConfig = KernelConfig()
    speculative_config: SpeculativeConfig | None = None
    reasoning_parser: str | None = None  # pagedllm/reasoning's name: structured outputs follow the thinking
    parallel_config: ParallelConfig = ParallelConfig()

    def with_kv_cache(self, num_blocks: int, max_model_len: int) -> EngineConfig:
        """The final config, from what start-up's KV-cache sizing found: its block count and the
        context it fits (lowered from the model's when a derived max_model_len did not fit)."""
        return dataclasses.replace(
            self,
            model_config=dataclasses.replace(self.model_config, max_model_len=max_model_len),
            cache_config=dataclasses.replace(self.cache_config, num_blocks=num_blocks),
            scheduler_config=dataclasses.replace(self.scheduler_config, max_model_len=max_model_len),
        )
