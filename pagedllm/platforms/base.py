"""A Platform says what a device can do and resolves the engine's kernel choices for it.

From the KernelConfig (config.py) the platform builds, once at start-up: the attention backend,
what the model's layers run (LayerKernels: op implementations, a linear method per weight, norm
folding), the sampler's inverse-CDF stage and the CPU's threads. Everything below takes these
objects; nothing re-decides per call or reads the environment.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from pagedllm.registry import LazyRegistry

if TYPE_CHECKING:
    import torch

    from pagedllm.attention.base import AttentionBackend, AttentionBackendOptions, BackendCapabilities
    from pagedllm.config import KernelConfig
    from pagedllm.layers.layer_kernels import LayerKernels

# sample_from_logits(logits [N, V] float32, u [N], inv_temperature [N] | None) -> [N] int64
InverseCdfStage = Callable[..., "torch.Tensor"]
# rejection_sample(target_probs, draft_probs, draft_ids, u_accept, u_recover) -> (accepted, recovered)
RejectionStage = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]
# apply_token_bitmask_(logits [S, V] float32, bitmask [R, W] int32 numpy, rows list[int]) -> None
TokenMaskStage = Callable[..., None]


class Platform(ABC):
    device_name: str = "base"

    @classmethod
    def check_available(cls) -> None:
        """Raise ModuleNotFoundError saying why this device cannot run here (no GPU, a CPU-only
        build). The resolution methods below work without the device; running does not."""

    @abstractmethod
    def attention_backend_name(self, kernel_config: KernelConfig) -> str:
        """The attention backend (attention/registry.py) this device runs under these choices."""

    @abstractmethod
    def make_attention_backend(self, kernel_config: KernelConfig,
                               options: AttentionBackendOptions) -> AttentionBackend:
        """The backend instance, with what it needs of the kernel choices filled into `options`."""

    @abstractmethod
    def layer_kernels(self, kernel_config: KernelConfig,
                      attention: BackendCapabilities | None = None) -> LayerKernels:
        """What the model's layers run (the model is built inside use_layer_kernels(...) with it).
        `attention`: the capabilities of the backend in use; None: of the one this platform picks."""

    def inverse_cdf_stage(self, kernel_config: KernelConfig) -> InverseCdfStage | None:
        """The sampler's fused inverse-CDF kernel on this device, or None for its torch ops."""
        return None

    def rejection_stage(self, kernel_config: KernelConfig) -> RejectionStage | None:
        """Speculative decoding's rejection rule as one kernel on this device (the signature of
        spec_decode/rejection.py's torch reference), or None for the reference."""
        return None

    def token_mask_stage(self, kernel_config: KernelConfig) -> TokenMaskStage:
        """Structured outputs' token masks on the logits: xgrammar's kernel (vectorised C++ on the
        CPU) unless the platform has its own."""
        from pagedllm.sample.token_bitmask import apply_token_bitmask_

        return apply_token_bitmask_

    @abstractmethod
    def available_memory_bytes(self) -> int:
        """Memory the KV cache may take a fraction of (free memory now, weights already loaded)."""

    @abstractmethod
    def default_dtype(self) -> str:
        """The dtype used when the user asks for 'auto'."""

    def device_count(self) -> int | None:
        """Devices of this kind on the host, one per tensor-parallel rank; None where ranks are
        processes sharing the host (the CPU)."""
        return None

    def set_num_threads(self, kernel_config: KernelConfig) -> None:
        """Configure intra-op threading for this device; CPU only."""

    def total_memory_bytes(self) -> int:
        """All the device memory, the base of gpu_memory_utilization on devices that profile."""
        return self.available_memory_bytes()

    def supports_cuda_graphs(self) -> bool:
        """Whether decode steps may be captured and replayed as CUDA graphs."""
        return False

    def default_scheduler_limits(self) -> tuple[int, int]:
        """(max_num_seqs, max_num_batched_tokens) when the user sets neither."""
        return 256, 2048


def backend_capabilities(name: str) -> BackendCapabilities:
    from pagedllm.attention.registry import get_backend_class

    return get_backend_class(name).capabilities


PLATFORMS: LazyRegistry[type[Platform]] = LazyRegistry("device", {
    "cpu": "pagedllm.platforms.cpu:CpuPlatform",
    "cuda": "pagedllm.platforms.cuda:CudaPlatform",
})


def get_platform(device: str = "auto") -> Platform:
    """Choose the platform at run time; 'auto' picks CUDA when a GPU is visible."""
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    cls = PLATFORMS.get(device)
    try:
        cls.check_available()
        return cls()
    except ModuleNotFoundError as e:
        raise ValueError(f"Device {device!r} is not supported in this build: {e}") from e
