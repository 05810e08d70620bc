"""Engine configuration: one frozen dataclass per concern, validated once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    gpu_memory_utilization: float = 0.9
    kv_cache_memory: int | None = None  # bytes; overrides gpu_memory_utilization when given
    # "sha256" resists crafted collisions between users' prefixes; "builtin" is Python's hash, faster
    prefix_caching_hash_algo: str = "sha256"

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a positive power of two, got {self.block_size}.")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}.")
        if self.num_gpu_blocks_override is not None and self.num_gpu_blocks_override < 1:
            raise ValueError("num_gpu_blocks_override must be at least 1.")
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


@dataclass(frozen=True)
class EngineConfig:
    model_config: ModelConfig
    cache_config: CacheConfig
    scheduler_config: SchedulerConfig
    device_config: DeviceConfig
