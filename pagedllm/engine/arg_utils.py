"""EngineArgs: the user's knobs, named like vLLM's, turned into one validated EngineConfig."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from pagedllm import envs
from pagedllm.config import (
    EXECUTOR_BACKENDS,
    CacheConfig,
    DeviceConfig,
    EngineConfig,
    KernelConfig,
    ModelConfig,
    ParallelConfig,
    SchedulerConfig,
)
from pagedllm.engine.vllm_compat import VllmCompatArgs, check_vllm_args
from pagedllm.generation_config import load_sampling_defaults
from pagedllm.models.registry import DRAFT_HEAD_ARCHITECTURES
from pagedllm.models.source import ModelSource, resolve_model_source, resolve_tokenizer_folder
from pagedllm.spec_decode.config import HEAD_METHODS, SpeculativeConfig

logger = logging.getLogger(__name__)
# The KernelConfig fields, each also an engine argument (None: from PAGEDLLM_<FIELD>, else the default).
KERNEL_ARGS = tuple(f.name for f in dataclasses.fields(KernelConfig))

_DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


@dataclass
class EngineArgs(VllmCompatArgs):
    """The engine's arguments; vLLM's others that pagedllm accepts at no-op values come from
    VllmCompatArgs (keyword-only, checked here at construction)."""

    model: str | None = None  # None: the embedded default model
    tokenizer: str | None = None
    dtype: str = "auto"
    seed: int = 0
    max_model_len: int | None = None
    max_num_seqs: int | None = None  # None: the platform's default (256; 512 on 70+ GiB GPUs)
    max_num_batched_tokens: int | None = None  # None: the platform's default, at least max_num_seqs
    block_size: int = 16
    enable_prefix_caching: bool = True
    prefix_caching_hash_algo: str = "sha256"  # or "builtin" (faster, not collision resistant)
    num_gpu_blocks_override: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_cache_memory: int | None = None  # bytes
    # vLLM's kv_cache_dtype: "auto" (the model's dtype; on the CPU with a GGUF file's quantized
    # weights bfloat16, as llama.cpp keeps an f16 cache), "bfloat16" (on the CPU also under a float32
    # model: half the bytes each decode step reads), "float32", or "fp8" / "fp8_e4m3" (CUDA: e4m3
    # with the checkpoint's K/V scales or unit ones, saturating; half a bf16 cache's bytes, twice
    # its tokens)
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False  # CUDA: no CUDA graphs
    device: str = "auto"
    load_format: str = "auto"  # "dummy": random weights in place of the checkpoint's (benchmarks)
    cuda_graph_sizes: list[int] | None = None  # decode batch sizes to capture; None: vLLM-like default
    cuda_graph_mode: str = "full_and_piecewise"  # or "full_decode_only": prompt steps run eagerly
    # overlap the host's work for the next step with the device's current step; None: on for CUDA
    async_scheduling: bool | None = None
    # default sampling parameters: "auto" (the model's generation_config.json), "vllm" (neutral) or a
    # folder with a generation_config.json (generation_config.py)
    generation_config: str = "auto"
    # vLLM's `quantization`: None (the checkpoint's own format: its quantization_config's, or a
    # GGUF file's types, which run as stored on the CPU), "fp8" (an FP8 checkpoint, or a bf16 one
    # quantized at load), "awq" / "gptq" (4-bit checkpoints), "gguf", or "none" (a GGUF file
    # dequantized at load to dtype)
    quantization: str | None = None
    # vLLM's speculative_config: a dict (or its JSON text), e.g. {"method": "ngram",
    # "num_speculative_tokens": 4} (spec_decode/config.py); None: no speculation
    speculative_config: SpeculativeConfig | dict[str, Any] | str | None = None
    # A reasoning model's parser (pagedllm/reasoning: qwen3, deepseek_r1): structured outputs then
    # constrain only the answer, after the thinking; the server also splits it into reasoning_content.
    reasoning_parser: str | None = None
    # Splitting the model over ranks (vLLM's names; config.ParallelConfig): tensor parallelism splits
    # every layer; the executor runs a worker per rank: "uni" (one rank, in this process), "mp" (a
    # process per rank on this host) or "ray" (Ray actors, on a cluster's machines); None: uni for
    # one rank, for more ray when RAY_ADDRESS names a cluster, else mp
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    # Kernel choices (config.KernelConfig; README, "Kernel choices"). None: the environment's
    # PAGEDLLM_<NAME> when set, else KernelConfig's default.
    attention_backend: str | None = None
    cpu_gemm: str | None = None
    triton: bool | None = None
    skinny_gemm: str | None = None
    gemm_pdl: bool | None = None
    fold_norms: bool | None = None
    decode_rotary: bool | None = None
    triton_sampler: bool | None = None
    cpu_kernels: bool | None = None
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        check_vllm_args(self)  # before anything loads: an unsupported vLLM setting fails at once
        self.quantization = QUANTIZATION_ALIASES.get(self.quantization or "", self.quantization)
        if self.quantization not in (None, *QUANTIZATIONS):
            raise ValueError(f"quantization={self.quantization!r} is not supported yet (supported: "
                             f"{', '.join(QUANTIZATIONS)}; by default a checkpoint's own format runs).")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype={self.kv_cache_dtype!r} is not supported yet (supported: "
                             f"{', '.join(KV_CACHE_DTYPES)}).")
        self.speculative_config = SpeculativeConfig.from_user(self.speculative_config)
        self._ranks()  # a bad parallel setting fails before anything loads
        if self.reasoning_parser is not None:
            from pagedllm.reasoning.parsers import REASONING_PARSERS

            REASONING_PARSERS.check(self.reasoning_parser)

    def create_kernel_config(self) -> KernelConfig:
        """The kernel choices: these arguments where set, over the environment's, over the defaults."""
        given = {name: getattr(self, name) for name in KERNEL_ARGS if getattr(self, name) is not None}
        return KernelConfig(**{**envs.kernel_config_defaults(), **given})

    def create_engine_config(self) -> EngineConfig:
        from pagedllm.platforms.base import get_platform

        kernel_config = self.create_kernel_config()  # first: a bad choice fails before any loading
        platform = get_platform(self.device)
        source = resolve_model_source(self.model)
        from pagedllm.models.loader import check_loadable, load_hf_config

        hf_config = load_hf_config(source)
        check_loadable(source, hf_config, self.load_format)
        model_config = ModelConfig(
            model=source.path,
            gguf_file=source.gguf_file,
            tokenizer=resolve_tokenizer_folder(self.tokenizer),
            hf_config=hf_config,
            dtype=_resolve_dtype(self.dtype, hf_config, platform.default_dtype()),
            max_model_len=_resolve_max_model_len(self.max_model_len, hf_config, source),
            seed=self.seed,
            load_format=self.load_format,
            max_model_len_explicit=self.max_model_len is not None,
            sampling_defaults=load_sampling_defaults(self.generation_config, source.path),
            quantization=_resolve_quantization(self.quantization, source, platform.device_name, hf_config),
        )
        parallel_config = self._parallel_config(model_config, platform)
        default_seqs, default_batched = platform.default_scheduler_limits()
        max_num_seqs = self.max_num_seqs if self.max_num_seqs is not None else default_seqs
        max_batched = self.max_num_batched_tokens or max(default_batched, max_num_seqs)
        return EngineConfig(
            model_config=model_config,
            cache_config=CacheConfig(
                block_size=self.block_size,
                enable_prefix_caching=self.enable_prefix_caching,
                prefix_caching_hash_algo=self.prefix_caching_hash_algo,
                num_gpu_blocks_override=self.num_gpu_blocks_override,
                gpu_memory_utilization=self.gpu_memory_utilization,
                kv_cache_memory=self.kv_cache_memory,
                cache_dtype=_check_cache_for_model(
                    _resolve_kv_cache_dtype(self.kv_cache_dtype, model_config.dtype, platform.device_name,
                                            model_config.quantization == "gguf"), model_config),
            ),
            scheduler_config=SchedulerConfig(
                max_num_seqs=max_num_seqs,
                max_num_batched_tokens=max_batched,
                max_model_len=model_config.max_model_len,
                async_scheduling=self._async_scheduling(platform.device_name),
            ),
            device_config=DeviceConfig(
                device=platform.device_name, enforce_eager=self.enforce_eager,
                cuda_graph_sizes=tuple(self.cuda_graph_sizes) if self.cuda_graph_sizes is not None else None,
                cuda_graph_mode=self.cuda_graph_mode,
            ),
            kernel_config=kernel_config,
            speculative_config=_resolve_draft(SpeculativeConfig.from_user(self.speculative_config), model_config,
                                              platform.device_name),
            reasoning_parser=self.reasoning_parser,
            parallel_config=parallel_config,
        )

    def _ranks(self) -> ParallelConfig:
        """The parallel config as far as it is known without the model."""
        backend = self.distributed_executor_backend
        if backend not in (None, *EXECUTOR_BACKENDS):
            raise ValueError(f"distributed_executor_backend={backend!r} is not supported yet (supported: "
                             f"{', '.join(EXECUTOR_BACKENDS)}).")
        sizes = (self.tensor_parallel_size, self.pipeline_parallel_size)
        world = sizes[0] * sizes[1] if all(isinstance(n, int) and n >= 1 for n in sizes) else 1  # (else refused below)
        if backend is None:  # vLLM's defaults: one rank in this process; more on this host, or on RAY_ADDRESS's cluster
            backend = "uni" if world == 1 else "ray" if envs.ray_address() else "mp"
        return ParallelConfig(self.tensor_parallel_size, self.pipeline_parallel_size, backend)

    def _parallel_config(self, model_config: ModelConfig, platform: Any) -> ParallelConfig:
        """The ranks, checked against the model and the host before anything loads."""
        config = self._ranks()
        devices = platform.device_count()
        if devices is not None and config.world_size > devices:
            raise ValueError(f"tensor_parallel_size x pipeline_parallel_size = {config.world_size} ranks need as many "
                             f"devices; this host has {devices}.")
        if config.tensor_parallel_size > 1:
            check_tensor_parallel(config.tensor_parallel_size, model_config)
        layers = model_config.hf_config.num_hidden_layers
        if config.pipeline_parallel_size > layers:
            raise ValueError(f"pipeline_parallel_size={config.pipeline_parallel_size} is larger than the number of "
                             f"layers ({layers}) of {model_config.architecture}.")
        if config.pipeline_parallel_size > 1 and self.speculative_config is not None:
            raise ValueError("Speculative decoding with pipeline_parallel_size > 1 is not supported yet (with "
                             "tensor_parallel_size > 1 it is).")
        return config

    def _async_scheduling(self, device: str) -> bool:
        wanted = device == "cuda" if self.async_scheduling is None else self.async_scheduling
        if wanted and self.speculative_config is not None:
            # A proposer reads the tokens the step sampled, on the host, before the next step can
            # be scheduled: there is nothing to overlap.
            if self.async_scheduling:
                logger.warning("Asynchronous scheduling is off with speculative decoding: each step's "
                               "proposals need the tokens it sampled.")
            return False
        return wanted


def check_tensor_parallel(size: int, model_config: ModelConfig) -> None:
    """ValueError unless `size` ranks can split this model: its attention heads, its KV heads
    (split, or replicated when fewer than the ranks) and its MLP."""
    hf = model_config.hf_config
    heads = hf.num_attention_heads
    kv_heads = getattr(hf, "num_key_value_heads", None) or heads
    sizes = {"the number of attention heads": heads, "the MLP's intermediate size": hf.intermediate_size}
    for what, total in sizes.items():
        if total % size:
            raise ValueError(f"tensor_parallel_size={size} does not divide {what} ({total}) of "
                             f"{model_config.architecture}.")
    if kv_heads % size and size % kv_heads:
        raise ValueError(f"tensor_parallel_size={size} must divide the number of KV heads ({kv_heads}) or be a "
                         "multiple of it.")


KV_CACHE_DTYPES = ("auto", "bfloat16", "float32", "fp8", "fp8_e4m3")
_FP8_CACHE = "float8_e4m3fn"


def _resolve_kv_cache_dtype(kv_cache_dtype: str, model_dtype: str, device: str, quantized: bool = False) -> str:
    """The cache's element type. "auto": the model's, except bfloat16 for a GGUF file's quantized
    weights on the CPU (`quantized`: their float32 activations would otherwise double the bytes
    each decode step reads, for no measurable quality: RESULTS.md; llama.cpp keeps an f16 cache).
    Safetensors checkpoints' formats (FP8, INT4) keep vLLM's rule: the model's dtype. A cache
    narrower than the model runs on the CPU only (its kernels widen the rows); on CUDA the cache
    has the model's dtype."""
    if kv_cache_dtype == "auto":
        return "bfloat16" if quantized and device == "cpu" and model_dtype == "float32" else model_dtype
    if kv_cache_dtype in ("fp8", "fp8_e4m3"):
        if device != "cuda":
            raise ValueError(f"kv_cache_dtype={kv_cache_dtype!r} runs on CUDA only (on the CPU: auto, bfloat16, "
                             "float32).")
        return _FP8_CACHE
    if device != "cpu" and model_dtype != kv_cache_dtype:
        raise ValueError(f"kv_cache_dtype={kv_cache_dtype!r} with a {model_dtype} model runs on the CPU only; "
                         "on CUDA the cache has the model's dtype (kv_cache_dtype='auto').")
    return kv_cache_dtype


def _check_cache_for_model(cache_dtype: str, model_config: ModelConfig) -> str:
    """An fp8 cache holds per-head K and V; latent attention's shared rows (MLA) are not supported."""
    if cache_dtype == _FP8_CACHE:
        from pagedllm.models.registry import get_model_class

        layout = get_model_class(model_config.architecture).kv_cache_layout(model_config.hf_config)  # type: ignore[attr-defined]
        if layout.shared:
            raise ValueError(f"kv_cache_dtype='fp8' is not supported for latent attention (MLA) models such as "
                             f"{model_config.architecture} yet; use kv_cache_dtype='auto'.")
    return cache_dtype


def _resolve_dtype(dtype: str, hf_config: object, default: str) -> str:
    if dtype == "auto":
        return default
    key = str(dtype).removeprefix("torch.")
    if key not in _DTYPE_ALIASES:
        raise ValueError(f"Unsupported dtype {dtype!r}; choose one of auto, float32, bfloat16, float16.")
    return _DTYPE_ALIASES[key]


def _resolve_max_model_len(requested: int | None, hf_config: object, source: ModelSource) -> int:
    derived = getattr(hf_config, "max_position_embeddings", None) or 2048
    if requested is None:
        return int(derived)
    if requested < 1:
        raise ValueError(f"max_model_len must be positive, got {requested}.")
    if requested > derived:
        raise ValueError(
            f"max_model_len={requested} is larger than the model's context of {derived} tokens "
            f"({source.display_name})."
        )
    return int(requested)


# quantization/registry.py's formats, GGUF's, and none
QUANTIZATIONS = ("awq", "compressed-tensors", "fp8", "gguf", "gptq", "none")
# vLLM's names of its kernels for these formats, which users pass for the format itself
QUANTIZATION_ALIASES = {"awq_marlin": "awq", "gptq_marlin": "gptq"}


def _resolve_draft(spec: SpeculativeConfig | None, target: ModelConfig, device: str) -> SpeculativeConfig | None:
    """For a draft model: its ModelConfig (the target's dtype and context), after checking that
    it can load and speaks the target's vocabulary. It loads as the target does (load_format:
    random weights for both with "dummy", as vLLM's draft shares the target's load config)."""
    if spec is None or spec.model is None:
        return spec
    from pagedllm.models.loader import check_loadable, load_hf_config

    source = resolve_model_source(spec.model)
    hf_config = load_hf_config(source)
    if spec.method in HEAD_METHODS:
        _check_head(spec.method, source, hf_config, target)
        hf_config.architectures = [DRAFT_HEAD_ARCHITECTURES[spec.method]]
        # Published heads state the context they were trained at (EAGLE-3 for Llama-3.1: 2048); a
        # head reads the target's positions, so it runs over the target's context (as in vLLM).
        hf_config.max_position_embeddings = max(getattr(hf_config, "max_position_embeddings", 0) or 0,
                                                target.max_model_len)
    check_loadable(source, hf_config, target.load_format)
    draft_vocab, target_vocab = hf_config.vocab_size, target.hf_config.vocab_size
    if draft_vocab != target_vocab:
        raise ValueError(f"speculative_config: the draft model {source.display_name} has a vocabulary of "
                         f"{draft_vocab} tokens and the target {target_vocab}; a draft must share the target's "
                         "tokenizer.")
    draft_context = getattr(hf_config, "max_position_embeddings", None) or target.max_model_len
    if draft_context < target.max_model_len:
        raise ValueError(f"speculative_config: the draft model's context ({draft_context} tokens) is shorter than "
                         f"max_model_len ({target.max_model_len}); lower max_model_len.")
    draft = ModelConfig(model=source.path, gguf_file=source.gguf_file, tokenizer=None, hf_config=hf_config,
                        dtype=target.dtype, max_model_len=target.max_model_len, seed=target.seed,
                        quantization=_resolve_quantization(spec.quantization, source, device, hf_config),
                        load_format=target.load_format)
    return dataclasses.replace(spec, draft_model_config=draft)


def _check_head(method: str, source: ModelSource, hf_config: object, target: ModelConfig) -> None:
    """An EAGLE head drafts for a Llama-family target of its hidden size (its fc reads it)."""
    if source.is_gguf:
        raise ValueError(f"speculative_config: an {method} head loads from a folder of safetensors, not a GGUF file.")
    if target.architecture not in ("LlamaForCausalLM", "MistralForCausalLM"):
        raise ValueError(f"speculative_config: the {method} method drafts for Llama-family targets "
                         f"(LlamaForCausalLM, MistralForCausalLM), not {target.architecture}.")
    want = getattr(hf_config, "target_hidden_size", None) or getattr(hf_config, "hidden_size", None)
    if want != target.hf_config.hidden_size:
        raise ValueError(f"speculative_config: the {method} head {source.display_name} reads hidden states of "
                         f"{want} features; the target's have {target.hf_config.hidden_size}.")


def _resolve_quantization(requested: str | None, source: ModelSource, device: str, hf_config: Any) -> str | None:
    """vLLM's `quantization`. A safetensors checkpoint runs its quantization_config's format
    (checked against `requested`), or an unquantized one is quantized at load where requested
    ("fp8"). For a GGUF file its own quantized types run as stored by default ("gguf"), and
    "none" dequantizes them at load to `dtype` (the reference path); quantized GGUF weights run
    on the CPU's kernels; on CUDA the default dequantizes, with a warning."""
    if not source.is_gguf:
        return _checkpoint_quantization(requested, hf_config)
    if requested not in (None, "gguf", "none"):
        raise ValueError(f"quantization={requested!r} does not apply to a GGUF file, whose own types run "
                         "(quantization='gguf', the default) or are dequantized at load (quantization='none').")
    value = requested
    if value == "none":
        return None
    if device != "cpu":
        if value == "gguf":
            raise ValueError(f"Quantized GGUF weights run on the CPU only so far, not on {device}; pass "
                             "quantization='none' to dequantize them at load.")
        logger.warning("GGUF weights are dequantized to the model's dtype at load on %s (the quantized "
                       "kernels run on the CPU only so far).", device)
        return None
    return "gguf"


def _checkpoint_quantization(requested: str | None, hf_config: Any) -> str | None:
    from pagedllm.quantization.registry import QUANTIZATION_CONFIGS, checkpoint_quantization, quantization_config

    stored = checkpoint_quantization(hf_config)
    if stored is not None:
        quantization_config(stored, hf_config)  # an unsupported scheme of the format fails here, before loading
    if requested == "gguf":
        raise ValueError("quantization='gguf' needs a GGUF file; this checkpoint is a safetensors folder.")
    if stored is None:
        if requested in (None, "none"):
            return None
        QUANTIZATION_CONFIGS.get(requested).online()  # a clear error where it cannot quantize at load
        return requested
    if requested in (None, stored):
        return stored
    raise ValueError(f"This checkpoint is {stored}-quantized; quantization={requested!r} cannot run it (pass "
                     f"quantization={stored!r} or leave it unset).")
